"""``python -m fr_shield.run``: the study's Hydra job (``fr_shield.study.job``), under its short name."""

from fr_shield.study.job import main

if __name__ == "__main__":
    main()
