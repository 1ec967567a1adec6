"""Dataset sources: builders that turn offline material into ``TaskData``."""
