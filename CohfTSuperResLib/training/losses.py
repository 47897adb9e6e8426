"""Training objective of Cohf-T (paper Sec. 3.1, Eq. 1-2, defaults from Sec. 4.2).

    L_in = alpha * MSE(I_out, I_gt) - (1 - alpha) * SSIM(I_out, I_gt)
    L_c  = alpha * MSE(R_out, R_gt) - (1 - alpha) * SSIM(R_out, R_gt)
    L    = L_in + lambda * L_c,       R_gt = gradient_magnitude(I_gt)

with alpha = 0.95 and lambda = 0.5. SSIM is the Gaussian-window one of
``pytorch_msssim`` (11 x 11, sigma 1.5, K = (0.01, 0.03)), computed on the
valid region only, so images must be at least 11 x 11 pixels. Its
``data_range`` defaults to 1.0 because images are normalised to about [0, 1]
(see ``imageio/normalize.py``); the same value is used for the gradient maps unless
``grad_data_range`` is given. For identical inputs the loss is
-(1 - alpha) * (1 + lambda) (MSE 0, SSIM 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ssim

from CohfTSuperResLib.model.gradient import gradient_magnitude

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def ssim_index(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) tensors (H, W >= 11), differentiable, Gaussian 11 x 11 window."""
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            f"SSIM expects two (B, C, H, W) tensors of equal shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(pred.shape[-2:])}"
        )
    return _ssim(pred, target, data_range=data_range, size_average=True, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)


class CohfTLoss(torch.nn.Module):
    """L = [a*MSE - (1-a)*SSIM](sr, hr) + lambda * [a*MSE - (1-a)*SSIM](sr_grad, gradient_magnitude(hr))."""

    def __init__(
        self,
        alpha: float = 0.95,
        lam: float = 0.5,
        data_range: float = 1.0,
        grad_data_range: float | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if lam < 0:
            raise ValueError(f"lambda must be non-negative, got {lam}")
        self.alpha = float(alpha)
        self.lam = float(lam)
        self.data_range = float(data_range)
        self.grad_data_range = float(data_range if grad_data_range is None else grad_data_range)

    def _term(self, pred: torch.Tensor, target: torch.Tensor, data_range: float) -> tuple[torch.Tensor, ...]:
        """(alpha*MSE - (1-alpha)*SSIM, MSE, SSIM) of one prediction/target pair."""
        mse = F.mse_loss(pred, target)
        similarity = ssim_index(pred, target, data_range)
        return self.alpha * mse - (1.0 - self.alpha) * similarity, mse, similarity

    def components(self, sr: torch.Tensor, sr_grad: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """All parts: mse/ssim of image and gradient, loss_image (L_in), loss_grad (L_c), total = L_in + lambda*L_c."""
        if sr.shape != hr.shape or sr_grad.shape != hr.shape:
            raise ValueError(
                "sr, sr_grad and hr must have the same (B, C, H, W) shape, got "
                f"{tuple(sr.shape)}, {tuple(sr_grad.shape)} and {tuple(hr.shape)}"
            )
        hr_grad = gradient_magnitude(hr)
        loss_image, mse_image, ssim_image = self._term(sr, hr, self.data_range)
        loss_grad, mse_grad, ssim_grad = self._term(sr_grad, hr_grad, self.grad_data_range)
        return {
            "mse_image": mse_image,
            "ssim_image": ssim_image,
            "mse_grad": mse_grad,
            "ssim_grad": ssim_grad,
            "loss_image": loss_image,
            "loss_grad": loss_grad,
            "total": loss_image + self.lam * loss_grad,
        }

    def forward(self, sr: torch.Tensor, sr_grad: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Total loss (scalar) of the SR image, its predicted gradient map and the HR ground truth."""
        return self.components(sr, sr_grad, hr)["total"]
