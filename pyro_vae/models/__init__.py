"""Models: Pyro model/guide pairs (VAE, CVAE, M2), their networks and likelihoods, and the registry
that builds them by name."""
