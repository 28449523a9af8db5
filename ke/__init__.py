"""Knowledge entropy (Kim et al., ICLR 2025): measure, continually train, resuscitate."""
import os

# OpenMP threads that spin while waiting make small CPU models up to 10x slower whenever another process
# competes for the cores (measured on a shared 2-core machine). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
