"""EMO Portrait for ComfyUI: EMO (Emote Portrait Alive) talking portraits; runs Hallo/Hallo2 weights."""

import logging

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.migration import register as register_migration
from .nodes.model_loader import network_files, register_model_folder

WEB_DIRECTORY = "./web"

_models = register_model_folder()
register_migration()  # API prompts of earlier versions (web/emo_workflow_migration.js does saved workflows)
if not network_files():
    logging.info("[EMO] No models in %s yet: see the EMO pack's README, 'Model folder'.", _models)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
