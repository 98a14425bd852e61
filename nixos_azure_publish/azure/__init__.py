"""Azure Resource Manager: clients, and one module per resource we look up or create."""
