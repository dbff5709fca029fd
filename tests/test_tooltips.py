"""Every input of every registered node says what it is for: a non-empty tooltip (what the frontend shows on
hover), for the widgets and the links alike, required and optional."""

import comfy_stubs


def inputs_without_tooltip(mappings: dict) -> list[tuple[str, str]]:
    """(node id, input) for each required or optional input whose options give no tooltip text."""
    missing = []
    for node_id, cls in mappings.items():
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, declared in spec.get(group, {}).items():
                options = declared[1] if len(declared) > 1 and isinstance(declared[1], dict) else {}
                if not str(options.get("tooltip", "")).strip():
                    missing.append((node_id, name))
    return missing


def test_every_input_of_every_node_has_a_tooltip(tmp_path):
    comfy_stubs.install(tmp_path / "models", tmp_path / "out")
    pack = comfy_stubs.load_pack()
    assert len(pack.NODE_CLASS_MAPPINGS) >= 13
    assert inputs_without_tooltip(pack.NODE_CLASS_MAPPINGS) == []


def test_a_missing_tooltip_is_found():
    class Planted:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": ("IMAGE",), "seed": ("INT", {"default": 0, "tooltip": "The seed."})},
                    "optional": {"mask": ("MASK", {"tooltip": " "})}, "hidden": {"prompt": "PROMPT"}}

    assert inputs_without_tooltip({"Planted": Planted}) == [("Planted", "image"), ("Planted", "mask")]
