from datamill.cli import entry

entry()
