"""CLI commands, one module per concern; registered in maskwatch.cli."""
