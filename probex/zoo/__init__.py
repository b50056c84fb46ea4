"""Model zoos: formats, safe reading, layer banks and the Hub."""
