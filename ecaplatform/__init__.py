"""ECA-Net reproduction platform: models, Lightning training, run tracking and a claims leaderboard."""

__version__ = "0.1.0"
