from continual.cli import entry

entry()
