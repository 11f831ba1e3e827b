"""Shared model building blocks (attention kinds, layers) that families compose."""
