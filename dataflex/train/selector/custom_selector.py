"""The spec's `CustomSelector` example, kept verbatim in behaviour: it proves the public selector API
(`register_selector`, `Selector`, `logger` from `.base_selector`) works unchanged. `component=custom`."""

from dataflex.core.registry import register_selector

from .base_selector import Selector, logger


@register_selector("custom")
class CustomSelector(Selector):
    """
    A custom data selector implementation example.
    """

    def __init__(
        self,
        dataset,
        accelerator,
        data_collator,
        cache_dir,
    ):
        """
        Constructor for initializing the selector.
        """
        super().__init__(dataset, accelerator, data_collator, cache_dir)
        logger.info("CustomSelector initialized.")

    def select(self, model, step_id: int, num_samples: int, **kwargs):
        """
        Core selection logic: return indices from 0 to num_samples-1.
        """
        return list(range(num_samples))
