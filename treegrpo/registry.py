"""Old path of `LoraText2Image` (now `treegrpo.recipes.serving`): the first releases' model versions import it here."""

from treegrpo.recipes.serving import LoraText2Image  # noqa: F401
