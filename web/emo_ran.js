// After EMO Sampler or EMO Sample To Video runs, what ran is shown: "Ran 10 steps, cfg 2, scheduler ddim
// (preset model default decided steps, cfg)", sent by nodes/sampler.py as the node's ui text. The preset may
// decide steps, cfg and scheduler, so the widgets alone do not say what ran. Shown as a caption under the node
// on the canvas (drawn, not a widget: nothing is saved with the workflow or sent with the prompt) and as a
// short toast (frontends whose nodes are not drawn on the canvas).
import { app } from "../../scripts/app.js";

const NODES = ["EMOSampler", "EMOSampleToVideo"];

app.registerExtension({
    name: "emo.samplingRan",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!NODES.includes(nodeData?.name)) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            onExecuted?.apply(this, arguments);
            const ran = message?.text?.[0];
            if (typeof ran !== "string") return;
            this.emoRan = ran;
            this.setDirtyCanvas?.(true, true);
            app.extensionManager?.toast?.add({ severity: "info", summary: "EMO", detail: `${this.title}: ${ran}`, life: 6000 });
        };
        const onDrawForeground = nodeType.prototype.onDrawForeground;
        nodeType.prototype.onDrawForeground = function (ctx) {
            onDrawForeground?.apply(this, arguments);
            if (!this.emoRan || this.flags?.collapsed) return;
            ctx.save();
            ctx.font = "12px sans-serif";
            ctx.fillStyle = "#9a9";
            ctx.fillText(this.emoRan, 0, this.size[1] + 16, Math.max(this.size[0], 200));
            ctx.restore();
        };
    },
});
