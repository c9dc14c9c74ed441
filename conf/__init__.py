"""fr_shield's Hydra config tree, installed as the package ``fr_shield.conf`` (``pkg://fr_shield.conf``)."""
