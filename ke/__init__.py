"""Knowledge entropy (Kim et al., ICLR 2025): measure, continually train, resuscitate."""

__version__ = "0.1.0"
