"""The benchmark's data sets: generated retina pairs (or DRIVE), lung pairs on real chest CT or a phantom
(or COPDGene, DIR-Lab 4DCT, NLST for testing), brain pairs on Colin27 + AAL."""

from __future__ import annotations

from typing import Any

import numpy as np

from equireg.experiments.jobs import PathLike, save_pairs

#: seeds of the generated data, independent of the training seeds
DATA_SEEDS = {"train": 1, "test": 2, "real": 3, "sweep": 4, "val": 5}
#: validation pairs per split when a preset does not say (learning curves, never the test pairs)
VALIDATION_IMAGES, VALIDATION_LUNG_PAIRS = 2, 2
#: the first generated mask index of each split, so train and test never share a vessel tree
MASK_OFFSETS = {"train": 100_000, "test": 200_000, "val": 300_000}


def retina_masks(split: str, settings: dict[str, Any], drive: PathLike | None = None) -> list[np.ndarray]:
    """Full-resolution vessel masks of a split: generated (or DRIVE when configured) for
    train/test, generated for "val" (DRIVE has no images to spare), the real scikit-image fundus
    for "real"."""
    from equireg.data import retina

    if split == "real":
        return [retina.skimage_retina_vessels()]
    if split == "val":
        return [retina.generate_vessel_mask(MASK_OFFSETS["val"] + i)
                for i in range(settings.get("val_images", VALIDATION_IMAGES))]
    count = settings["train_images"] if split == "train" else settings["test_images"]
    if drive:
        from equireg.data.loaders import drive_vessel_masks

        masks = drive_vessel_masks(drive, "training")
        # the paper's split of DRIVE's 20 training images: the first for testing, the next for training
        test = masks[:settings["test_images"]]
        train = masks[settings["test_images"]:settings["test_images"] + settings["train_images"]]
        return train if split == "train" else test
    return [retina.generate_vessel_mask(MASK_OFFSETS[split] + i) for i in range(count)]


def build_retina_set(path: PathLike, split: str, condition: str, settings: dict[str, Any],
                     drive: PathLike | None = None) -> None:
    """One retina pair set: every mask and its vertical flip, ``warps_per_image`` warps each; the
    file says which ``split`` and ``condition`` it is (its ``split`` and ``condition`` arrays)."""
    from equireg.data.perturb import retina_dataset

    # test pairs keep their exact maps for the endpoint error; training needs none
    pairs = retina_dataset(retina_masks(split, settings, drive), condition, settings["warps_per_image"],
                           seed=DATA_SEEDS[split], pool=settings["pool"], with_map=split != "train")
    save_pairs(path, **pairs.arrays(), split=np.array(split), condition=np.array(condition))


def build_sweep_set(path: PathLike, sweep: dict[str, Any], retina: dict[str, Any]) -> None:
    """The shift sweep's pairs, built once for every method: ``sweep["pairs"]`` warped test masks,
    each with the fixed image shifted vertically by every one of ``sweep["shifts"]`` (full-resolution
    rows); ``pair`` and ``shift_px`` (pixels at network resolution) say which pair is which."""
    from equireg.data.perturb import PairSet, shift_sweep_pairs

    masks = retina_masks("test", retina)
    arrays: dict[str, list[np.ndarray]] = {}
    for k in range(sweep["pairs"]):
        pairs = shift_sweep_pairs(masks[k % len(masks)], [(s, 0) for s in sweep["shifts"]],
                                  seed=(DATA_SEEDS["sweep"], k), pool=retina["pool"], with_map=False)
        stacked = {**PairSet.stack(pairs).arrays(), "pair": np.full(len(pairs), k),
                   "shift_px": np.asarray(sweep["shifts"], dtype=np.float64) / retina["pool"]}
        for name, value in stacked.items():
            arrays.setdefault(name, []).append(value)
    save_pairs(path, **{name: np.concatenate(values) for name, values in arrays.items()})


def _real_lung_pairs(dataset: str, root: PathLike, count: int) -> list:
    """The first ``count`` pairs of a real lung dataset (:mod:`equireg.data.loaders`)."""
    from equireg.data import loaders

    if dataset == "nlst":
        return [loaders.load_nlst(root, fixed, moving) for fixed, moving in loaders.nlst_pairs(root)[:count]]
    load = loaders.load_dirlab_copdgene if dataset == "copdgene" else loaders.load_dirlab_4dct
    return [load(root, case) for case in range(1, min(count, 10) + 1)]


def _common_landmarks(pairs: list, seed: int) -> list[np.ndarray]:
    """Per pair, the indices of the landmarks kept: all where every pair has as many (DIR-Lab's 300),
    else a seeded random subset of the smallest count (NLST's keypoints vary from pair to pair), so
    that they stack as ``[N, K, D]``."""
    keep = min(len(pair.fixed_landmarks) for pair in pairs)
    rng = np.random.default_rng(seed)
    return [np.arange(keep) if len(pair.fixed_landmarks) == keep
            else np.sort(rng.choice(len(pair.fixed_landmarks), keep, replace=False)) for pair in pairs]


#: which chest CT gives each split's pairs: training sees one patient, validation and testing the
#: other, so the lung table measures generalisation to unseen anatomy; lung2 trains because its
#: scan covers the whole lungs (61 slices, apex to diaphragm) and lung1's stops near the diaphragm
CT_PATIENTS = {"train": "lung2", "val": "lung1", "test": "lung1"}


def build_chest_ct(path: PathLike, size: int, configured: PathLike | None, download_folder: PathLike) -> None:
    """The two chest CTs, segmented and resampled onto a ``size``^3 grid, cached at
    ``path`` (:mod:`equireg.data.chest_ct`: ``configured``, else downloaded into ``download_folder``)."""
    from equireg.data import chest_ct

    volumes = chest_ct.find_volumes(configured, download_folder)
    chest_ct.save_cache(path, {name: chest_ct.prepare(image, size) for name, image in volumes.items()})


def build_lung_set(path: PathLike, split: str, settings: dict[str, Any], copdgene: PathLike | None = None,
                   dirlab4dct: PathLike | None = None, nlst: PathLike | None = None,
                   chest_ct: PathLike | None = None) -> None:
    """Lung pairs preprocessed as CT (clamp, [0, 1], lung mask) at ``size``^3, with landmarks.

    Breathing pairs with exact maps and landmarks: on a real chest CT when ``settings["data"]`` is
    ``ct`` (``chest_ct``, the cache of :func:`build_chest_ct`; the patient of :data:`CT_PATIENTS`;
    training images get an intensity augmentation), else on generated phantoms (inhale moving,
    exhale fixed). With a real dataset the test split is its first ``pairs`` pairs, resampled with
    their spacing kept for TRE in mm: ``copdgene``, DIR-Lab COPDGene cases (expiration moving,
    inspiration fixed, 300 landmarks); ``dirlab4dct``, DIR-Lab 4DCT cases (T50 moving, T00 fixed, 300
    landmarks); ``nlst``, Learn2Reg NLST ``registration_val`` pairs (moving and fixed as listed; its
    keypoints, a seeded subset of the smallest count where pairs differ).
    """
    shape = (settings["size"],) * 3
    roots = {name: root for name, root in (("copdgene", copdgene), ("dirlab4dct", dirlab4dct), ("nlst", nlst))
             if root}
    if len(roots) > 1:
        raise ValueError(f"datasets: {', '.join(f'{name} ({root})' for name, root in roots.items())} are set "
                         "together; the lung test set is one of them")
    if split == "test" and roots:
        from equireg.data.lung import prepare_lung_ct, resample_points

        (dataset, root), = roots.items()
        real = _real_lung_pairs(dataset, root, settings["pairs"])
        arrays: dict[str, list] = {key: [] for key in ("moving", "fixed", "moving_landmarks", "fixed_landmarks",
                                                        "spacing")}
        for pair, kept in zip(real, _common_landmarks(real, DATA_SEEDS["test"])):
            for side in ("moving", "fixed"):
                image, spacing = prepare_lung_ct(getattr(pair, side), getattr(pair, f"{side}_mask"), pair.spacing,
                                                 shape)
                arrays[side].append(image[None])
                arrays[f"{side}_landmarks"].append(
                    resample_points(getattr(pair, f"{side}_landmarks")[kept], getattr(pair, side).shape, shape))
            arrays["spacing"].append(spacing)
        stacked = {key: np.stack(value) for key, value in arrays.items()}
        save_pairs(path, moving_label=(stacked["moving"] > 0).astype(np.float32),
                   fixed_label=(stacked["fixed"] > 0).astype(np.float32), **stacked)
        return
    count = {"train": settings["train_pairs"], "val": settings.get("val_pairs", VALIDATION_LUNG_PAIRS)}.get(
        split, settings["pairs"])
    seeds = [(DATA_SEEDS[split], k) for k in range(count)]
    augment = None
    if settings.get("data", "phantom") == "ct":
        from equireg.data.breathing import breathing_pair
        from equireg.data.chest_ct import load_cache

        if not chest_ct:
            raise ValueError("build_lung_set: lung data 'ct' needs the chest CT cache (build_chest_ct)")
        ct = load_cache(chest_ct, CT_PATIENTS[split])
        pairs = [breathing_pair(ct, seed, settings["landmarks"]) for seed in seeds]
        if split == "train":
            augment = np.random.default_rng(DATA_SEEDS[split])
    else:
        from equireg.data.lung import lung_pair

        pairs = [lung_pair(seed, shape=shape, landmarks=settings["landmarks"]) for seed in seeds]
    _save_lung_pairs(path, pairs, augment, with_map=split != "train")


def _save_lung_pairs(path: PathLike, pairs: list, augment: np.random.Generator | None, with_map: bool) -> None:
    """Write generated pairs (:class:`equireg.data.lung.LungPair`) as network input; ``augment``
    draws an intensity augmentation for each image (training pairs); ``with_map`` keeps the exact
    maps (training needs none, and at the paper's 160^3 they would triple the file)."""
    from equireg.data.breathing import augment_intensity
    from equireg.data.lung import preprocess_ct

    def image(pair, side: str) -> np.ndarray:
        mask = getattr(pair, f"{side}_mask")
        preprocessed = preprocess_ct(getattr(pair, side), mask)
        return augment_intensity(preprocessed, mask, augment) if augment is not None else preprocessed

    save_pairs(
        path,
        moving=np.stack([image(p, "moving") for p in pairs])[:, None].astype(np.float32),
        fixed=np.stack([image(p, "fixed") for p in pairs])[:, None].astype(np.float32),
        moving_label=np.stack([p.moving_mask for p in pairs])[:, None],
        fixed_label=np.stack([p.fixed_mask for p in pairs])[:, None],
        moving_landmarks=np.stack([p.moving_landmarks for p in pairs]),
        fixed_landmarks=np.stack([p.fixed_landmarks for p in pairs]),
        spacing=np.stack([np.asarray(p.spacing) for p in pairs]),
        **({"coordinates": np.stack([p.coordinates for p in pairs]).astype(np.float32)} if with_map else {}),
    )


def build_colin27(path: PathLike, settings: dict[str, Any], configured: PathLike | None,
                  download_folder: PathLike) -> None:
    """Colin27, its brain mask and AAL on the brain experiment's canvas (``settings``: ``spacing_mm``,
    ``axis``, ``shifts``: padded by the largest; ``pooling``: sizes for whole-cell equivariance,
    :func:`equireg.data.brain.canvas`), cached at ``path`` (:mod:`equireg.data.brain`: ``configured``,
    else the installed package, else downloaded into ``download_folder``)."""
    from equireg.data import brain

    folder = brain.find_templates(configured, download_folder)
    brain.save_cache(path, brain.prepare(folder, settings["spacing_mm"], settings["axis"], max(settings["shifts"]),
                                         settings["pooling"]))


def build_brain_set(path: PathLike, split: str, settings: dict[str, Any], colin27: PathLike) -> None:
    """Brain pairs of a split (:func:`equireg.data.brain_pairs.brain_pair`, seeded by split and
    index), none shifted: the test pairs are shifted at evaluation, every shift of the sweep from
    the same pairs. Training images get an intensity augmentation; validation and test pairs keep
    their exact maps. ``label_names`` (AAL's) marks a set of multi-label pairs."""
    from equireg.data.brain import load_cache
    from equireg.data.brain_pairs import RMS_MM, brain_pair
    from equireg.data.breathing import augment_intensity

    volume = load_cache(colin27)
    count = {"train": settings["train_pairs"], "val": settings["val_pairs"]}.get(split, settings["pairs"])
    pairs = [brain_pair(volume, (DATA_SEEDS[split], k), settings.get("rms_mm", RMS_MM)) for k in range(count)]
    augment = np.random.default_rng(DATA_SEEDS[split]) if split == "train" else None

    def images(side: str) -> np.ndarray:
        stacked = [getattr(p, side) if augment is None else augment_intensity(getattr(p, side), getattr(p, f"{side}_mask"),
                                                                               augment) for p in pairs]
        return np.stack(stacked)[:, None].astype(np.float32)

    exact = {"coordinates": np.stack([p.coordinates for p in pairs])} if split != "train" else {}
    save_pairs(path, moving=images("moving"), fixed=images("fixed"),
               moving_label=np.stack([p.moving_labels for p in pairs])[:, None],
               fixed_label=np.stack([p.fixed_labels for p in pairs])[:, None],
               spacing=np.full(3, volume.spacing), label_names=np.asarray(volume.names), **exact)
