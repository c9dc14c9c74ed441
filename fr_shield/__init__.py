"""fr_shield: protect faces in photos from unauthorised face recognition."""

__version__ = "0.1.0"
