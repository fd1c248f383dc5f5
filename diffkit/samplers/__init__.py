"""Samplers of the reverse-time family for any linear SDE.

Built-ins (registry short names): ``euler_maruyama`` (:mod:`.euler_maruyama`), ``heun``
(:mod:`.heun`), ``ddim`` (:mod:`.ddim`), ``deis`` (:mod:`.deis`), ``gddim`` (:mod:`.gddim`),
``pc`` (:mod:`.pc`), ``ei`` (:mod:`.exponential_integrator`), ``dpm_solver``
(:mod:`.dpm_solver`), ``unipc`` (:mod:`.unipc`); the last two share the log-SNR coefficients
of :mod:`.log_snr`. Every sampler is written against the
:class:`~diffkit.sdes.base.LinearSDE` / :class:`~diffkit.sdes.operators.LinearOp` interface
only, so it runs on scalar (VP, VE), spectral (blurring) and 2x2-block (CLD) SDEs alike.
Modules are imported on use (nothing heavy at ``import diffkit.samplers``).
"""
