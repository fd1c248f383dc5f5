"""Small stand-in files in the formats of MAF's UCI POWER, GAS and HEPMASS copies (for the loader
tests and CPU studies where the real files are absent). The values are synthetic (structured
mixtures, not the real measurements); only the layout, column roles and the features that the
preprocessing acts on (dropped columns, near-duplicate sensors, discrete features) mimic the
originals, so MAF's preprocessing yields 6, 8 and 21 dimensions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["gas_table", "write_gas", "write_hepmass", "write_power"]


def write_power(root: Path, n: int = 4000, seed: int = 0) -> Path:
    """``root/power/data.npy``: ``(n, 8)`` (active/reactive power, voltage, intensity,
    three sub-meterings with values in whole watt-hours, time of day in hours)."""
    rng = np.random.default_rng(seed)
    hour = rng.uniform(0, 24, n)
    busy = (np.sin(2 * np.pi * (hour - 7) / 24) > 0).astype(float)
    active = np.round(rng.gamma(2.0, 0.4 + 0.8 * busy), 3)
    reactive = np.round(0.1 * active + 0.05 * rng.random(n), 3)
    voltage = np.round(240 - 2.0 * active + rng.normal(0, 2.0, n), 2)
    intensity = np.round(active * 4.2, 1)
    sub = np.stack(
        [rng.poisson(lam, n) * (rng.random(n) < p) for lam, p in ((20, 0.1), (5, 0.3), (8, 0.5))],
        axis=1,
    ).astype(float)
    table = np.column_stack([active, reactive, voltage, intensity, sub, np.round(hour, 4)])
    path = Path(root) / "power" / "data.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)
    return path


def gas_table(n: int = 4000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The ethylene-CO table: ``Time``, ``Meth``, ``Eth`` and 16 sensors, paired so that each
    of 8 latent responses is read by two sensors with correlation > 0.98."""
    rng = np.random.default_rng(seed)
    time = np.arange(n, dtype=float) * 0.01
    meth = np.clip(rng.normal(100, 60, n), 0, None)
    eth = np.clip(rng.normal(10, 6, n), 0, None)
    mix = rng.normal(size=(3, 8))
    latent = np.column_stack([meth / 60, eth / 6, rng.normal(size=n)]) @ mix
    latent += 0.8 * rng.standard_t(5, size=(n, 8))
    sensors = []
    for j in range(8):
        sensors += [latent[:, j], 1.3 * latent[:, j] + 0.05 * rng.normal(size=n) + 2.0]
    columns = ["Time", "Meth", "Eth", *[f"sensor{k}" for k in range(16)]]
    return columns, np.column_stack([time, meth, eth, *sensors])


def write_gas(root: Path, n: int = 4000, seed: int = 0) -> Path:
    """``root/gas/ethylene_CO.pickle`` (a pickled pandas DataFrame; needs pandas)."""
    import pandas as pd

    columns, values = gas_table(n, seed)
    path = Path(root) / "gas" / "ethylene_CO.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(values, columns=columns).to_pickle(path)
    return path


def write_hepmass(root: Path, n_train: int = 4000, n_test: int = 1000, seed: int = 0) -> Path:
    """``root/hepmass/1000_train.csv`` (label + 27 features) and ``1000_test.csv`` (one more
    trailing column). Both classes; 6 features carry a point mass at their minimum (MAF's
    preprocessing removes them)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(5, 27))

    def rows(n: int) -> np.ndarray:
        label = (rng.random(n) < 0.5).astype(float)
        z = rng.normal(size=(n, 5))
        feats = z @ base + rng.normal(size=(n, 27)) + 1.5 * label[:, None]
        feats[:, :5] = np.abs(feats[:, :5])  # positive, skewed features like transverse momenta
        for j in range(21, 27):  # discrete component: a point mass at the lowest value
            feats[rng.random(n) < 0.2, j] = feats[:, j].min() - 1.0
        return np.column_stack([label, np.round(feats, 6)])

    folder = Path(root) / "hepmass"
    folder.mkdir(parents=True, exist_ok=True)
    header = ",".join(["# label", *[f"f{k}" for k in range(27)]])
    np.savetxt(folder / "1000_train.csv", rows(n_train), delimiter=",", header=header, comments="")
    test = rows(n_test)
    test = np.column_stack([test, rng.random(n_test)])
    np.savetxt(folder / "1000_test.csv", test, delimiter=",", header=header + ",extra", comments="")
    return folder
