"""LinearOp algebra against dense matrices, and the DCT basis against scipy."""

from __future__ import annotations

import pytest
import scipy.fft
import torch

from diffkit.sdes.operators import DCTBasis, LinearOp, dct_matrix


def _random_ops(gen: torch.Generator) -> list[tuple[LinearOp, tuple[int, ...]]]:
    """A scalar, a per-mode DCT-diagonal and a 2x2-block operator, with their data shapes."""
    scalar = LinearOp.scalar(torch.rand(1, generator=gen, dtype=torch.float64) + 0.5)
    spectral = LinearOp.diagonal(
        torch.rand(1, 3, 4, generator=gen, dtype=torch.float64) + 0.5, basis=DCTBasis(3, 4)
    )
    blk = torch.rand(1, 2, 2, generator=gen, dtype=torch.float64) + 2 * torch.eye(2)
    block = LinearOp.block(blk)
    return [(scalar, (2, 3)), (spectral, (2, 3, 4)), (block, (3,))]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["scalar", "dct_diagonal", "block2"])
def test_algebra_matches_dense_matrices(which: int) -> None:
    gen = torch.Generator().manual_seed(which)
    op, shape = _random_ops(gen)[which]
    other, _ = _random_ops(torch.Generator().manual_seed(10 + which))[which]
    a, b = op.dense(shape)[0], other.dense(shape)[0]
    torch.testing.assert_close((op @ other).dense(shape)[0], a @ b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((op + other).dense(shape)[0], a + b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.T.dense(shape)[0], a.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        op.inv().dense(shape)[0], torch.linalg.inv(a), rtol=1e-10, atol=1e-10
    )
    spd = op @ op.T
    chol = spd.cholesky().dense(shape)[0]
    torch.testing.assert_close(chol @ chol.T, spd.dense(shape)[0], rtol=1e-10, atol=1e-10)
    _, logabs = torch.linalg.slogdet(a)
    torch.testing.assert_close(op.logdet(shape)[0], logabs, rtol=1e-10, atol=1e-10)


def test_scalar_times_block_promotes_to_blocks() -> None:
    s = LinearOp.scalar(torch.tensor([2.0]))  # float64, like every SDE coefficient
    blk = LinearOp.block(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64))
    torch.testing.assert_close((s @ blk).coef, 2 * blk.coef)
    torch.testing.assert_close((blk + s).coef, blk.coef + 2 * torch.eye(2, dtype=torch.float64))
    # Mixed precision promotes instead of failing.
    assert (s @ LinearOp.block(blk.coef.float())).coef.dtype == torch.float64


def test_rows_broadcast_against_the_batch() -> None:
    c = torch.tensor([1.0, 2.0, 3.0])
    u = torch.ones(3, 2, 5)
    out = LinearOp.scalar(c).apply(u)
    torch.testing.assert_close(out, c[:, None, None] * u)
    table = LinearOp.scalar(torch.arange(1.0, 6.0))
    assert table[2].n == 1 and table[2].coef.item() == 3.0


def test_dct_basis_matches_scipy_and_is_orthonormal() -> None:
    basis = DCTBasis(5, 7)
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    torch.testing.assert_close(basis.forward(x), torch.from_numpy(ref), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(basis.inverse(basis.forward(x)), x, rtol=1e-12, atol=1e-12)
    c = dct_matrix(6)
    torch.testing.assert_close(c @ c.T, torch.eye(6, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_mismatched_image_size_names_the_fix() -> None:
    op = LinearOp.diagonal(torch.ones(1, 4, 4), basis=DCTBasis(4, 4))
    with pytest.raises(ValueError, match="image_size"):
        op.apply(torch.ones(1, 1, 8, 8))


def test_mixing_bases_is_refused() -> None:
    a = LinearOp.diagonal(torch.ones(1, 4, 4), basis=DCTBasis(4, 4))
    b = LinearOp.diagonal(torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="different bases"):
        _ = a @ LinearOp.diagonal(torch.ones(1, 3, 3), basis=DCTBasis(3, 3))
    # Pixel-wise coefficients do not commute with the DCT: refused, not silently misread.
    with pytest.raises(ValueError, match="different bases"):
        _ = a @ b
    with pytest.raises(ValueError, match="different bases"):
        _ = b + a
    # An identity-basis operator without modes (a scalar) composes with any basis.
    assert (a @ LinearOp.scalar(2.0)).basis == DCTBasis(4, 4)
    assert (b @ LinearOp.scalar(2.0)).basis is None


def test_bad_coefficient_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="k, k"):
        LinearOp(torch.ones(3, 2))
    with pytest.raises(ValueError, match="1x1 or 2x2"):
        LinearOp(torch.ones(1, 3, 3))
