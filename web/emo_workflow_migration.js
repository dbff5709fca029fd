// Workflows saved with earlier versions of the EMO nodes keep loading: before the frontend builds the
// graph (beforeConfigureGraph, in frontends 1.x old and new), their widget values are rewritten to
// today's widgets and settings that moved to EMO Sampler Options / EMO Family Options get such a node;
// such a workflow opens with every node in view, clear of the minimap.
import { app } from "../../scripts/app.js";
import { migrateWorkflow, openingView } from "./emo_migrate.js";

const table = fetch(new URL("./emo_migrations.json", import.meta.url)).then((r) => r.json());

function minimapShown() {
    try {
        const shown = app.extensionManager?.setting?.get?.("Comfy.Minimap.Visible");
        return shown !== false; // unknown (an older frontend): keep its corner clear anyway
    } catch {
        return true;
    }
}

app.registerExtension({
    name: "emo.workflowMigration",
    async beforeConfigureGraph(graphData) {
        try {
            const changed = migrateWorkflow(graphData, await table);
            const canvas = app.canvas?.canvas;
            if (!changed || !canvas) return;
            const rect = canvas.getBoundingClientRect();
            const view = openingView(await table, graphData, {
                width: window.innerWidth, height: window.innerHeight, left: rect.left, top: rect.top,
                minimap: minimapShown(),
            });
            if (view) graphData.extra = { ...(graphData.extra ?? {}), ds: view };
        } catch (err) {
            console.warn("EMO: could not bring saved EMO nodes up to date:", err);
        }
    },
});
