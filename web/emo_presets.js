// EMO Sampler and EMO Sample To Video: the steps, cfg and scheduler widgets are greyed out while the
// selected preset decides them (their values are then not used), and active again with "custom"; so are
// the settings of a connected EMO Sampler Options node that the preset decides (guidance_end, cache_interval
// with balanced and fast), when every sampler it reaches has such a preset.
// Which preset decides what: web/emo_presets.json, written from nodes/sampler.py (PRESET_DECIDES).
// Updated when a preset changes (canvas or Vue nodes), when links change, and when a workflow is opened,
// pasted or undone. Greying is widget.disabled, which both frontends draw at half opacity (1.27 and 1.58's
// LiteGraph canvas; 1.58's Vue nodes dim a disabled combo, and this file's style dims a disabled number
// field the same way); it leaves the widget's value, widgets_values and the prompt as they are.
// The decision part has no imports: it also runs under node.js (tests/test_frontend_presets.py).

export const CUSTOM = "custom";
export const MODEL_DEFAULT = "model default";
export const CONTROLLED = ["steps", "cfg", "scheduler"];

// When web/emo_presets.json cannot be read: what nodes/sampler.py's PRESET_DECIDES says today ("custom"
// nothing, "model default" the model's own steps and cfg, any other preset its steps, cfg and scheduler).
export const FALLBACK = {
    nodes: ["EMOSampler", "EMOSampleToVideo"], presetWidget: "preset",
    decides: { [CUSTOM]: [], [MODEL_DEFAULT]: ["steps", "cfg"] }, options: {},
};

// emo_presets.json → {nodes, presetWidget, decides: {preset: [widget]}, options: {preset: {type: [widget]}}}
export function readTable(json) {
    const presets = json?.presets ?? {};
    return {
        nodes: json?.nodes ?? FALLBACK.nodes,
        presetWidget: json?.preset_widget ?? FALLBACK.presetWidget,
        decides: Object.fromEntries(Object.entries(presets).map(([p, e]) => [p, e.decides ?? []])),
        options: Object.fromEntries(Object.entries(presets).map(([p, e]) => [p, e.options_decides ?? {}])),
    };
}

// The widgets a preset decides; a preset the table does not list (a newer node's) decides all three,
// as every named preset does.
export function decidedWidgets(table, preset) {
    const decides = (table ?? FALLBACK).decides;
    if (Object.prototype.hasOwnProperty.call(decides, preset)) return [...decides[preset]];
    return preset === CUSTOM ? [] : [...CONTROLLED];
}

function controlledNames(table) {
    return new Set([...CONTROLLED, ...Object.values((table ?? FALLBACK).decides).flat()]);
}

// A sampler's widgets ([{name, value}]) → {widget name: disabled} for the widgets a preset may decide;
// null when the widgets have no preset widget.
export function widgetStates(table, widgets) {
    const t = table ?? FALLBACK;
    const preset = widgets.find((w) => w.name === t.presetWidget);
    if (!preset) return null;
    const decided = new Set(decidedWidgets(t, preset.value));
    const names = controlledNames(t);
    const states = {};
    for (const w of widgets) if (names.has(w.name) && w.name !== t.presetWidget) states[w.name] = decided.has(w.name);
    return states;
}

// An options node of `type` whose settings reach samplers with these presets → {setting: disabled}: a
// setting is greyed when every one of those presets decides it (none reached: nothing greyed).
export function optionStates(table, type, presets) {
    const options = (table ?? FALLBACK).options;
    const names = new Set(Object.values(options).flatMap((o) => o[type] ?? []));
    const states = {};
    for (const name of names) {
        states[name] = presets.length > 0 && presets.every((p) => (options[p]?.[type] ?? []).includes(name));
    }
    return states;
}

function isSampler(table, node) {
    return (table ?? FALLBACK).nodes.includes(node.comfyClass ?? node.type)
        && (node.widgets ?? []).some((w) => w.name === (table ?? FALLBACK).presetWidget);
}

// The presets of the samplers an options node's output reaches, through chained options nodes.
export function reachedPresets(table, node, seen = new Set()) {
    if (seen.has(node)) return [];
    seen.add(node);
    const found = [];
    for (let slot = 0; slot < (node.outputs ?? []).length; slot++) {
        for (const next of node.getOutputNodes?.(slot) ?? []) {
            if (!next) continue;
            if (isSampler(table, next)) {
                found.push(next.widgets.find((w) => w.name === (table ?? FALLBACK).presetWidget).value);
            } else {
                found.push(...reachedPresets(table, next, seen));
            }
        }
    }
    return found;
}

function setDisabled(node, states) {
    let changed = false;
    for (const w of node.widgets ?? []) {
        if (!(w.name in states) || Boolean(w.disabled) === states[w.name]) continue;
        w.disabled = states[w.name]; // the value is left as it is
        changed = true;
    }
    return changed;
}

// Every sampler and options node of a graph (app.graph, or a subgraph) greyed as its preset says; returns
// whether anything changed.
export function applyToGraph(table, graph) {
    let changed = false;
    const types = new Set(Object.values((table ?? FALLBACK).options).flatMap((o) => Object.keys(o)));
    for (const node of graph?._nodes ?? graph?.nodes ?? []) {
        if (isSampler(table, node)) {
            changed = setDisabled(node, widgetStates(table, node.widgets)) || changed;
        } else if (types.has(node.comfyClass ?? node.type)) {
            changed = setDisabled(node, optionStates(table, node.comfyClass ?? node.type, reachedPresets(table, node)))
                || changed;
        }
    }
    return changed;
}

export async function loadTable() {
    try {
        const response = await fetch(new URL("./emo_presets.json", import.meta.url));
        if (response.ok) return readTable(await response.json());
        console.warn(`EMO: web/emo_presets.json: HTTP ${response.status}; using the built-in preset rules.`);
    } catch (err) {
        console.warn("EMO: web/emo_presets.json could not be read, using the built-in preset rules:", err);
    }
    return null;
}

// Vue nodes (1.58's "Modern Node Design") draw a disabled combo at half opacity but a disabled number field
// only with its +/- buttons dimmed: the same half opacity for the number fields of the widgets greyed here.
function dimVueNumberFields(names) {
    const style = document.createElement("style");
    style.dataset.emo = "presets";
    style.textContent = names.map((n) => `.lg-node [data-widget-name="${n}"]:has(input:disabled) [aria-label="${n}"]`)
        .join(",\n") + " { opacity: 0.5; }";
    document.head.append(style);
}

function register(app) {
    let table = null;
    const tableRead = loadTable().then((t) => {
        table = t;
        const t2 = t ?? FALLBACK;
        dimVueNumberFields([...new Set([...controlledNames(t2),
            ...Object.values(t2.options).flatMap((o) => Object.values(o).flat())])]);
    });
    const refresh = (node) => {
        const graph = node?.graph ?? app.graph;
        if (applyToGraph(table, graph)) app.canvas?.setDirty?.(true, true);
    };
    const ours = (node) => (table ?? FALLBACK).nodes.includes(node.comfyClass)
        || Object.values((table ?? FALLBACK).options).some((o) => node.comfyClass in o)
        || /^EMO.*Options$/.test(node.comfyClass ?? "");

    app.registerExtension({
        name: "emo.presets",
        async setup() {
            await tableRead; // nodes made before the table came: again with it
            refresh();
        },
        nodeCreated(node) {
            if (!ours(node)) return;
            const preset = node.widgets?.find((w) => w.name === (table ?? FALLBACK).presetWidget);
            if (preset) {
                const callback = preset.callback;
                preset.callback = function (...args) {
                    const result = callback?.apply(this, args);
                    refresh(node);
                    return result;
                };
            }
            const onConfigure = node.onConfigure;
            node.onConfigure = function (...args) {
                const result = onConfigure?.apply(this, args);
                refresh(node); // opened, pasted, undone: the saved preset is in place now
                return result;
            };
            const onConnectionsChange = node.onConnectionsChange;
            node.onConnectionsChange = function (...args) {
                const result = onConnectionsChange?.apply(this, args);
                refresh(node); // an options node connected to or taken from a sampler
                return result;
            };
            tableRead.then(() => refresh(node));
        },
        loadedGraphNode(node) {
            if (ours(node)) refresh(node);
        },
    });
}

// In the browser (not under node.js): registered while the frontend awaits this module (top-level await).
if (typeof window !== "undefined") register((await import("../../scripts/app.js")).app);
