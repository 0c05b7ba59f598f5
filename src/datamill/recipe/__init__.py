"""Recipes: YAML -> validated models, with errors that point at a line."""

from datamill.recipe.check import column_order, resolve_generator
from datamill.recipe.loader import LoadedRecipe, load_file, load_text, recipe_hash
from datamill.recipe.model import Recipe

__all__ = ["LoadedRecipe", "Recipe", "column_order", "load_file", "load_text", "recipe_hash", "resolve_generator"]
