"""The theory, checked: KL divergences and the exact linear-Gaussian testbed."""
