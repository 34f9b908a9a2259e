"""The Sparkplug B wire format: pure Python, no Django, no database (docs/sparkplug.md)."""
