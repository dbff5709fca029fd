// Saved EMO nodes of earlier versions, brought to today's widgets as a workflow is opened (see
// emo_workflow_migration.js). The table is emo_migrations.json; nodes/migration.py does the same for
// API prompts and is tested against this file. No imports: it also runs under node.js in the tests.

function convertValue(table, name, value) {
    const rule = table.values[name];
    if (rule && rule.renamed && typeof value === "string") return rule.renamed[value] ?? value; // an old default renamed
    if (!rule || typeof value === "string" || typeof value === "boolean" || value === null || value === undefined) {
        return value;
    }
    if (rule.choices) { // a number → the nearest listed rate
        if (value < rule.model_default_below) return table.model_default;
        let best = rule.choices[0];
        for (const c of rule.choices) if (Math.abs(Number(c) - value) < Math.abs(Number(best) - value)) best = c;
        return best;
    }
    if ("model_default_below" in rule) { // a number, with a magic value for the model's own
        return value < rule.model_default_below ? table.model_default : String(Math.round(value));
    }
    if (value < rule.default_below) return rule.default; // feather: -1 (the default band)
    if (value > rule.pixels_above) return Math.min(0.5, value / rule.pixels_of_side);
    return value;
}

function samplerValues(table, old) {
    const s = table.sampler;
    let preset = old.preset ?? s.custom; // before presets, the widgets decided
    if (preset in s.presets) preset = s.presets[preset];
    if (preset === s.custom && s.model_default_when_zero.every((n) => old[n] === 0)) preset = table.model_default;
    const out = { preset };
    for (const [name, def] of Object.entries(s.widget_defaults)) {
        if (name in old) out[name] = old[name] || def;
    }
    return out;
}

// Named values of a saved node → [today's named values, [[options node type, widgets_values], ...]]
export function migrateValues(table, type, values) {
    const spec = table.nodes[type];
    if (!spec) return [values, []];
    const known = new Set([...spec.widgets, "control_after_generate"]);
    const moved = Object.keys(values).some((k) => !known.has(k));
    const out = {};
    for (const name of spec.widgets) if (name in values) out[name] = convertValue(table, name, values[name]);
    for (const [name, value] of Object.entries(spec.added ?? {})) if (!(name in out)) out[name] = value;
    const options = [];
    if (moved && spec.options_input) {
        Object.assign(out, samplerValues(table, values));
        for (const [kind, option] of Object.entries(table.options_nodes)) {
            const given = option.widgets.map((n, i) => (n in values ? convertValue(table, n, values[n]) : option.defaults[i]));
            if (given.some((v, i) => v !== option.defaults[i])) options.push([kind, given]);
        }
    }
    return [out, options];
}

function linkFields(link) {
    if (!Array.isArray(link)) return link;
    const [id, origin_id, origin_slot, target_id, target_slot, type] = link;
    return { id, origin_id, origin_slot, target_id, target_slot, type };
}

function setLinkTarget(graph, linkId, slot) {
    (graph.links ?? []).forEach((link, i) => {
        if (linkFields(link).id !== linkId) return;
        if (Array.isArray(link)) graph.links[i][4] = slot;
        else link.target_slot = slot;
    });
}

function removeLink(graph, linkId) {
    graph.links = (graph.links ?? []).filter((l) => linkFields(l).id !== linkId);
    for (const node of graph.nodes ?? []) {
        for (const out of node.outputs ?? []) {
            if (out.links?.includes(linkId)) out.links.splice(out.links.indexOf(linkId), 1);
        }
    }
}

function nextId(graph, kind) {
    const [stateKey, flatKey] = kind === "node" ? ["lastNodeId", "last_node_id"] : ["lastLinkId", "last_link_id"];
    const items = kind === "node" ? graph.nodes ?? [] : graph.links ?? [];
    const used = Math.max(0, ...items.map((n) => (kind === "node" ? n.id : linkFields(n).id)));
    let id;
    if (graph.state && typeof graph.state === "object") {
        id = Math.max(used, graph.state[stateKey] ?? 0) + 1;
        graph.state[stateKey] = id;
    } else {
        id = Math.max(used, graph[flatKey] ?? 0) + 1;
        graph[flatKey] = id;
    }
    return id;
}

function fixInputs(table, graph, node, spec) {
    const kept = [];
    const gone = [];
    for (const inp of node.inputs ?? []) {
        const widget = inp.widget?.name;
        if (widget !== undefined && !spec.widgets.includes(widget)) {
            gone.push(inp.link);
            continue;
        }
        if (widget in table.widget_types) inp.type = table.widget_types[widget];
        kept.push(inp);
    }
    if (spec.options_input && !kept.some((inp) => inp.name === "options")) {
        kept.push({ name: "options", type: table.options_type, link: null });
    }
    node.inputs = kept;
    for (const linkId of gone) if (linkId !== null && linkId !== undefined) removeLink(graph, linkId);
    kept.forEach((inp, slot) => {
        if (inp.link !== null && inp.link !== undefined) setLinkTarget(graph, inp.link, slot);
    });
}

function connect(table, graph, origin, target, slot) {
    const id = nextId(graph, "link");
    const fields = { id, origin_id: origin.id, origin_slot: 0, target_id: target.id, target_slot: slot, type: table.options_type };
    graph.links = graph.links ?? [];
    const objects = (graph.links.length > 0 && !Array.isArray(graph.links[0])) || (graph.state && typeof graph.state === "object");
    graph.links.push(objects ? fields : Object.values(fields));
    origin.outputs[0].links = origin.outputs[0].links ?? [];
    origin.outputs[0].links.push(id);
    target.inputs[slot].link = id;
}

// Where a new node of this size goes beside `target` without covering any node (the table's placement; the
// same search as nodes/migration.py's free_spot, tested equal): the grid point nearest to the place left of
// `target` (`below` lower down) whose rectangle, title bar and margin included, meets no node (each counted at
// least min_width wide, as the frontends widen a narrow node to its title and widgets), not above or left of
// the graph's nodes (where the view opens).
export function freeSpot(table, graph, target, width, height, below = 0) {
    const p = table.placement;
    const { title_bar: title, margin, step, range: reach } = p;
    const boxes = (graph.nodes ?? []).map((n) => {
        const [x, y] = n.pos ?? [0, 0];
        const [w, h] = n.size ?? [0, 0];
        return [x, y - title, x + Math.max(w, p.min_width), y + h];
    });
    const [tx, ty] = target.pos ?? [0, 0];
    const x0 = tx - p.gap - width;
    const y0 = ty + below;
    const left = Math.min(...boxes.map((b) => b[0]), x0);
    const top = Math.min(...boxes.map((b) => b[1]), y0 - title);
    for (let distance = 0; distance <= 2 * reach; distance++) {
        const rows = Math.min(distance, reach);
        for (let j = -rows; j <= rows; j++) {
            const across = distance - Math.abs(j);
            for (const i of across ? [-across, across] : [0]) {
                const x = x0 + i * step;
                const y = y0 + j * step;
                if (Math.abs(i) > reach || x < left || y - title < top) continue;
                const area = [x - margin, y - title - margin, x + width + margin, y + height + margin];
                const meets = (b) => Math.min(area[2], b[2]) > Math.max(area[0], b[0]) && Math.min(area[3], b[3]) > Math.max(area[1], b[1]);
                if (!boxes.some(meets)) return [x, y];
            }
        }
    }
    return [x0, y0]; // no free place within reach: beside the target, as before
}

function addOptionsNode(table, graph, target, kind, values, upstream) {
    const [width, height] = table.options_nodes[kind].size;
    const kinds = Object.keys(table.options_nodes);
    let below = 0;
    for (const k of kinds.slice(0, kinds.indexOf(kind))) below += table.options_nodes[k].size[1] + 40;
    const node = {
        id: nextId(graph, "node"), type: kind, pos: freeSpot(table, graph, target, width, height, below),
        size: [width, height], flags: {}, order: 0, mode: 0,
        inputs: [{ name: "options", type: table.options_type, link: null }],
        outputs: [{ name: "options", type: table.options_type, links: [], slot_index: 0 }],
        properties: { "Node name for S&R": kind }, widgets_values: values,
    };
    graph.nodes.push(node);
    if (upstream) connect(table, graph, upstream, node, 0);
    return node;
}

// Whether a node was rewritten to today's widget layout or an options node added.
function migrateGraph(table, graph) {
    let changed = false;
    for (const node of [...(graph.nodes ?? [])]) {
        const spec = table.nodes[node.type];
        const values = node.widgets_values;
        if (!spec || !Array.isArray(values)) continue;
        const layout = spec.old.find((old) => old.length === values.length);
        if (!layout && values.length !== spec.widgets.length) {
            console.warn(`EMO: ${node.type} node ${node.id} has ${values.length} widget values, a layout this version does not know; left as it is.`);
            continue;
        }
        const names = layout ?? spec.widgets;
        const [out, options] = migrateValues(table, node.type, Object.fromEntries(names.map((n, i) => [n, values[i]])));
        node.widgets_values = spec.widgets.map((n) => out[n]);
        if (layout) fixInputs(table, graph, node, spec);
        let upstream = null;
        for (const [kind, optionValues] of options) upstream = addOptionsNode(table, graph, node, kind, optionValues, upstream);
        if (upstream) connect(table, graph, upstream, node, node.inputs.findIndex((inp) => inp.name === "options"));
        changed = changed || Boolean(layout) || options.length > 0;
    }
    return changed;
}

// How tall today's frontends draw `node`: its saved height, or more for an EMO node whose widgets need more
// rows than an earlier version saved room for (nodes/migration.py's drawn_height).
export function drawnHeight(table, node, rule = "drawn") {
    const height = (node.size ?? [0, 0])[1];
    const rows = table.placement.rows[node.type];
    if (!rows) return height;
    const d = table.placement[rule];
    return Math.max(height, rows[0] * d.slot + rows[1] * d.widget + d.padding);
}

// How wide today's frontends draw `node` at least (nodes/migration.py's drawn_width).
export function drawnWidth(table, node) {
    return Math.max((node.size ?? [0, 0])[0], table.placement.widths[node.type] ?? 0);
}

// In place: each EMO node gets the size it is drawn at, and a node that then lies under another (side by
// side at all, title bars included) moves down until margin px clear of the height Vue nodes draw that one
// at (placement.room), nearest the top first (the same
// as nodes/migration.py's make_room, tested equal).
export function makeRoom(table, graph) {
    const { title_bar: title, margin } = table.placement;
    const nodes = (graph.nodes ?? []).filter((n) => n.pos && n.size);
    for (const node of nodes) node.size = [drawnWidth(table, node), drawnHeight(table, node)];
    const key = (n) => [n.pos[1], n.pos[0], n.id ?? 0];
    const before = (a, b) => { const [p, q] = [key(a), key(b)]; return p[0] - q[0] || p[1] - q[1] || p[2] - q[2]; };
    for (let round = 0; round <= nodes.length ** 2; round++) { // each move takes one node below one more
        const order = [...nodes].sort(before);
        let pair = null;
        for (let i = 0; i < order.length && !pair; i++) {
            const b = order[i];
            pair = order.slice(0, i).map((a) => [a, b]).find(([a]) =>
                Math.min(a.pos[0] + a.size[0], b.pos[0] + b.size[0]) > Math.max(a.pos[0], b.pos[0])
                && a.pos[1] + drawnHeight(table, a, "room") + margin > b.pos[1] - title) ?? null;
        }
        if (!pair) return;
        const [a, b] = pair;
        b.pos = [b.pos[0], a.pos[1] + drawnHeight(table, a, "room") + margin + title];
    }
}

// A workflow as saved by the frontend (root graph and subgraph definitions), migrated in place; whether it
// changed. Where a node was rewritten or added, EMO nodes saved shorter than today's widgets need grow taller
// and the nodes under them move down (makeRoom), and the saved view (extra.ds) is dropped: nodes grew or were
// added beside the old ones, so the old view would leave some out.
export function migrateWorkflow(workflow, table) {
    let changed = migrateGraph(table, workflow);
    for (const subgraph of workflow.definitions?.subgraphs ?? []) changed = migrateGraph(table, subgraph) || changed;
    if (changed) {
        for (const graph of [workflow, ...(workflow.definitions?.subgraphs ?? [])]) makeRoom(table, graph);
        if (workflow.extra && "ds" in workflow.extra) delete workflow.extra.ds;
    }
    return changed;
}

// The saved view (extra.ds) under which `graph` opens fully visible in a window of frame.width x frame.height
// whose canvas starts at frame.left, frame.top: the table's placement.view, the minimap's corner kept clear
// where frame.minimap (the graph goes left of it or above it, whichever shows it larger).
export function openingView(table, graph, frame) {
    const v = table.placement.view;
    const title = table.placement.title_bar;
    const nodes = (graph.nodes ?? []).filter((n) => n.pos && n.size);
    if (nodes.length === 0) return null;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - title));
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + drawnHeight(table, n, "room"))); // Vue nodes' height
    const [w, h] = [frame.width - v.left - v.right, frame.height - v.top - v.bottom];
    const [mw, mh] = frame.minimap ? v.minimap : [0, 0];
    const fit = (width, height) => Math.min(width / (x1 - x0), height / (y1 - y0), v.max_scale);
    const scale = Math.max(fit(w - mw, h), fit(w, h - mh));
    if (!(scale > 0)) return null;
    return { scale, offset: [(v.left - frame.left) / scale - x0, (v.top - frame.top) / scale - y0] };
}
