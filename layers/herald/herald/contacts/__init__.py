"""Contacts: customers and leads."""
