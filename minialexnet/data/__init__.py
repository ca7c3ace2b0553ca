"""Data: datasets, the built-in shapes dataset, the paper's input pipeline and a batch loader.

=====================  ==============================================  ===================
name                   what                                            paper section
=====================  ==============================================  ===================
ImageDataset           uint8 (N, 3, S, S) images, int64 labels, names  §2
DatasetStats           mean image, RGB covariance PCA                  §2, §4.1
compute_stats          both, streamed over a (memmap) training set     §2, §4.1
make_synthetic         the built-in dataset (10 shape classes)         --
random_crop_flip       training crops, flips, PCA colour noise         §4.1
center_crop, ten_crop  test-time crops                                 §4.1
BatchLoader            shuffled, augmented, prefetched mini-batches    §4.1, §5
=====================  ==============================================  ===================

ImageNet folders and the decoded-image cache live in ``minialexnet.data.imagenet`` (with
``folders``, ``subsets``, ``decode`` (§2: one file to S x S pixels) and the cache: ``cache``,
``cache_dir``, ``cache_files``, ``progress``).
"""
import importlib

_WHERE = {
    "ImageDataset": "dataset", "DatasetStats": "dataset", "compute_stats": "dataset",
    "make_synthetic": "synthetic",
    "random_crop_flip": "augment", "center_crop": "augment", "ten_crop": "augment",
    "BatchLoader": "loader",
}
__all__ = list(_WHERE)


def __getattr__(name):  # PEP 562: import a module on first use (augment/loader load Numba)
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
