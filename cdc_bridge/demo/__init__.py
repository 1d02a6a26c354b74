"""The demo: sample schemas, configs and the scripted story (see story.py)."""
