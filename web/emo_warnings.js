// Shows the EMO nodes' warnings (face detection fallback, cut-short audio, non-square portrait, ...)
// to the person at the graph as toasts, not only in the server log. Sent by nodes/notify.py.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
    name: "emo.warnings",
    setup() {
        api.addEventListener("emo.warning", ({ detail }) => {
            const text = `${detail.node}: ${detail.message}`;
            const toast = app.extensionManager?.toast;
            if (toast) {
                toast.add({ severity: "warn", summary: "EMO", detail: text, life: 12000 });
            } else {
                console.warn("EMO:", text);
            }
        });
    },
});
