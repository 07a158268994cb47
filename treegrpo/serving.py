"""Old path of `LoraText2Image` (now `treegrpo.recipes.serving`): versions registered before it moved import it."""

from treegrpo.recipes.serving import LoraText2Image  # noqa: F401
