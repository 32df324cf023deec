"""Architecture batches that are not loaded while nothing uses them, and validations on part of the split.

Every step of a one-shot search draws a batch from each of its two loaders (Lightning's combined loader),
but during a warm-up epoch only the weights are trained: the architecture batch is loaded, augmented
and thrown away. On the built-in data at 48x96 that is 62 architecture batches of 32 images per warm-up
epoch, twice the images of the weight steps (the shorter architecture loader is cycled), at about 2 ms
per image on a CPU.

``skippable_loader`` rebuilds a map-style loader around a ``SkippableSampler``: while its ``skip`` is set
the sampler hands out ``(index, True)`` and the dataset wrapper returns nothing for it, so the step sees
``None`` in place of the batch. The sampler still draws its order as before (same random stream), and
the flag is read in the main process when an epoch's iterator starts, so it reaches worker processes
too.

The same wrapper validates on the first ``limit`` items of an epoch's order only: items past it are
skipped, a batch that holds some of them is cut short, and one that holds only them is ``None``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


class SkippableSampler(Sampler):
    """Wraps a sampler; yields ``(index, skip)`` with the ``skip`` flag and ``limit`` of the moment the
    epoch started: every item is skipped while ``skip`` is set, and items past the first ``limit`` while
    ``limit`` is not ``None``. The wrapped sampler's order is drawn in full either way (the same random
    stream)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.skip = False
        self.limit: Optional[int] = None

    def __iter__(self) -> Iterator[Tuple[Any, bool]]:
        skip, limit = self.skip, self.limit
        for position, index in enumerate(self.sampler):
            yield index, skip or (limit is not None and position >= limit)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class _SkippableDataset(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Tuple[Any, bool]) -> Any:
        index, skip = key
        return None if skip else self.dataset[index]


class _SkippableCollate:
    """The loader's collate function on the items not skipped, or ``None`` when every item of the batch
    was (a class: picklable)."""

    def __init__(self, collate: Callable[[Sequence[Any]], Any]):
        self.collate = collate

    def __call__(self, items: Sequence[Any]) -> Any:
        kept = [item for item in items if item is not None]
        return self.collate(kept) if kept else None


def skippable_loader(loader: Any) -> Tuple[Any, Optional[SkippableSampler]]:
    """``(loader, sampler)``: a copy of ``loader`` whose batches can be skipped through ``sampler.skip``
    (or cut to an epoch's first ``sampler.limit`` items), or ``(loader, None)`` unchanged where that
    cannot be done safely (not a ``DataLoader``, an iterable dataset, or a custom batch sampler)."""
    if (not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset)
            or loader.batch_size is None):
        return loader, None
    sampler = SkippableSampler(loader.sampler)
    kwargs = dict(batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                  collate_fn=_SkippableCollate(loader.collate_fn), pin_memory=loader.pin_memory,
                  drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                  multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                  persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(_SkippableDataset(loader.dataset), **kwargs), sampler
