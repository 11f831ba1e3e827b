"""Model families, one package each, found by name through ``registry`` (which holds the
contract). Nothing outside a family's package names it."""
