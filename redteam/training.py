"""The optimiser step shared by every training loop (demo zoo, unlearning methods).

Loops go through ``accelerate.Accelerator`` (DESIGN.md, "Conventions"); this keeps the step
itself (backward, gradient clipping, update, schedule, progress) written once.
"""

from __future__ import annotations


def optimizer_step(accelerator, params, optimizer, loss, progress, scheduler=None,
                   max_grad_norm: float = 1.0) -> None:
    """Backward ``loss``, clip, update (and advance ``scheduler``), report on ``progress``."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    progress.update(1)
    progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def finish_training(accelerator, model, progress):
    """Close the progress bar and return the unwrapped model in eval mode."""
    progress.close()
    model = accelerator.unwrap_model(model)
    model.eval()
    return model
