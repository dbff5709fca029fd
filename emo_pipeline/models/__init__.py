from .backbone import Backbone, BackboneConditions
from .net import EMONet
from .reference_net import ReferenceNet

__all__ = ["Backbone", "BackboneConditions", "EMONet", "ReferenceNet"]
