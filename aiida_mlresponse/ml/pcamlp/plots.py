"""Figures of the PCA-MLP model (seed 002 Figs. 2, 3, 5 and 9), matplotlib with the Agg backend.

Each function takes plain arrays, writes one PNG and returns its path.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ENERGY_LABELS = {'F': 'free energy F', 'U': 'band energy U', 'minus_TS': 'entropic energy −TS'}
FIELD_LABELS = {'rho': 'density ρ', 'phi': 'Coulomb potential φ', 'u': 'band-energy density u',
                's': 'entropy density s'}


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path


def parity(true: dict, predicted: dict, path, spread: dict | None = None, title: str = ''):
    """Predicted against true energies (mHa, relative to the mean of the truth), one panel per key."""
    keys = [k for k in ENERGY_LABELS if k in true and k in predicted]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        t = 1e3 * np.ravel(true[key])
        p = 1e3 * np.ravel(predicted[key])
        ref = t.mean()
        err = None if spread is None or key not in spread else 1e3 * np.ravel(spread[key])
        ax.errorbar(t - ref, p - ref, yerr=err, fmt='.', ms=3, alpha=0.6, elinewidth=0.5)
        lo, hi = min((t - ref).min(), (p - ref).min()), max((t - ref).max(), (p - ref).max())
        ax.plot([lo, hi], [lo, hi], 'k-', lw=0.8)
        mae, worst = np.abs(p - t).mean(), np.abs(p - t).max()
        ax.set_title(f'{ENERGY_LABELS[key]}\nMAE {mae:.3g} mHa, max {worst:.3g} mHa', fontsize=9)
        ax.set_xlabel('true − mean (mHa)')
        ax.set_ylabel('predicted − mean (mHa)')
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def nrmse_histograms(nrmse: dict, path, pca_only: dict | None = None, title: str = ''):
    """Histogram of the per-configuration NRMSE of each field (%), with the PCA-only error."""
    keys = [k for k in FIELD_LABELS if k in nrmse]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = 100 * np.asarray(nrmse[key])
        bins = np.logspace(np.log10(max(values.min(), 1e-6)), np.log10(values.max() * 1.01 + 1e-12), 30)
        ax.hist(values, bins=bins, alpha=0.7, label=f'model (mean {values.mean():.3g}%)')
        if pca_only and key in pca_only:
            pca = 100 * np.asarray(pca_only[key])
            ax.hist(pca, bins=np.logspace(np.log10(max(pca.min(), 1e-7)), np.log10(pca.max() * 1.01 + 1e-12), 30),
                    alpha=0.5, label=f'PCA only (mean {pca.mean():.2g}%)')
        ax.set_xscale('log')
        ax.set_xlabel('NRMSE (%)')
        ax.set_title(FIELD_LABELS[key], fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def field_slice(true: dict, predicted: dict, path, plane: int = 0, axis: int = 2, title: str = ''):
    """Seed Fig. 2: for each field, truth, prediction and error on one grid plane (reduced coordinates)."""
    keys = [k for k in FIELD_LABELS if k in true and k in predicted]
    fig, axes = plt.subplots(len(keys), 3, figsize=(10, 2.8 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        t = np.take(np.asarray(true[key]), plane, axis=axis)
        p = np.take(np.asarray(predicted[key]), plane, axis=axis)
        vmin, vmax = t.min(), t.max()
        for ax, image, name, kwargs in (
            (row[0], t, 'true', dict(vmin=vmin, vmax=vmax, cmap='viridis')),
            (row[1], p, 'predicted', dict(vmin=vmin, vmax=vmax, cmap='viridis')),
            (row[2], p - t, 'error', dict(cmap='RdBu_r', vmin=-np.abs(p - t).max(), vmax=np.abs(p - t).max())),
        ):
            im = ax.imshow(image.T, origin='lower', aspect='auto', **kwargs)
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f'{FIELD_LABELS[key]}: {name}', fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def stress_strain(curves: list[dict], path, title: str = '', units: str = 'Ha/Bohr3'):
    """Seed Fig. 9: uniaxial stress (GPa) against applied strain with the committee band, and the
    transverse strains. Each curve: {'axis', 'applied', 'sigma', 'sigma_std', 'transverse'}, stress in
    Ha/Bohr³ (converted here) or GPa (`units`), optionally 'unstable_at' (applied strain where instability
    is flagged) and 'dft' ((strains, σ in GPa): reference points)."""
    from aiida_mlresponse.physics.units import HARTREE_TO_EV, BOHR_TO_ANGSTROM

    to_gpa = 1.0 if units == 'GPa' else HARTREE_TO_EV / BOHR_TO_ANGSTROM**3 * 160.21766208
    fig, axes = plt.subplots(1, 1 + len(curves), figsize=(4.2 * (1 + len(curves)), 3.8), squeeze=False)
    ax0 = axes[0][0]
    for k, curve in enumerate(curves):
        axis = curve['axis']
        x = np.asarray(curve['applied'])
        s = to_gpa * np.asarray(curve['sigma'])
        band = to_gpa * np.asarray(curve.get('sigma_std', np.zeros_like(s)))
        line, = ax0.plot(x, s, '-', label=f'x{axis + 1}')
        ax0.fill_between(x, s - 2 * band, s + 2 * band, color=line.get_color(), alpha=0.25)
        if curve.get('unstable_at') is not None:
            ax0.axvline(curve['unstable_at'], color=line.get_color(), ls=':', lw=1)
        if curve.get('dft') is not None:
            ax0.plot(*curve['dft'], 'o', mfc='none', color=line.get_color(), label=f'x{axis + 1} DFT')
        ax = axes[0][k + 1]
        others = [i for i in range(3) if i != axis]
        transverse = np.asarray(curve['transverse'])
        for j, other in enumerate(others):
            ax.plot(x, transverse[:, j], label=f'ε{other + 1}{other + 1}')
        ax.set_xlabel(f'ε{axis + 1}{axis + 1}')
        ax.set_ylabel('transverse strain')
        ax.set_title(f'uniaxial stress along x{axis + 1}', fontsize=9)
        ax.legend(fontsize=7)
    ax0.set_xlabel('applied strain ε_ii')
    ax0.set_ylabel('σ_ii (GPa), band: ±2 committee std')
    ax0.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
