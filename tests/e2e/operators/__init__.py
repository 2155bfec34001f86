"""Operators that the end-to-end tests run against skiff, written as their users would write them."""
