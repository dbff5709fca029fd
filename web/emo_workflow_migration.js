// Workflows saved with earlier versions of the EMO nodes keep loading: before the frontend builds the
// graph (beforeConfigureGraph, in frontends 1.x old and new), their widget values are rewritten to
// today's widgets and settings that moved to EMO Sampler Options / EMO Family Options get such a node.
import { app } from "../../scripts/app.js";
import { migrateWorkflow } from "./emo_migrate.js";

const table = fetch(new URL("./emo_migrations.json", import.meta.url)).then((r) => r.json());

app.registerExtension({
    name: "emo.workflowMigration",
    async beforeConfigureGraph(graphData) {
        try {
            migrateWorkflow(graphData, await table);
        } catch (err) {
            console.warn("EMO: could not bring saved EMO nodes up to date:", err);
        }
    },
});
