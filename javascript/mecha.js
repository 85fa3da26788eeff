// sd-webui-mecha: only what gradio cannot do. Everything lives in this one IIFE; elements are
// found by their mecha_ ids, inside the WebUI's gradioApp() root or the standalone page.
(function () {
    "use strict";

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function byId(id) {
        return root().querySelector("#" + id);
    }

    // Re-render the tab (status line, lists) each time it becomes visible: the WebUI may have
    // loaded another checkpoint while another tab was open.
    function watchVisibility() {
        var status = byId("mecha_status");
        var refresh = byId("mecha_status_refresh");
        if (!status || !refresh || status.dataset.mechaWatched) {
            return !!status;
        }
        status.dataset.mechaWatched = "1";
        var wasVisible = false;
        var observer = new IntersectionObserver(function (entries) {
            entries.forEach(function (entry) {
                if (entry.isIntersecting && !wasVisible) {
                    refresh.click();
                }
                wasVisible = entry.isIntersecting;
            });
        });
        observer.observe(status);
        return true;
    }

    // Ctrl+Enter in the .mecha box loads it into the builder.
    function onKey(event) {
        if (!(event.ctrlKey || event.metaKey) || event.key !== "Enter") {
            return;
        }
        var box = byId("mecha_recipe_text");
        if (box && box.contains(event.target)) {
            var load = byId("mecha_text_load");
            if (load) {
                event.preventDefault();
                load.click();
            }
        }
    }

    function start() {
        if (window.mechaTabStarted) {
            return;
        }
        window.mechaTabStarted = true;
        document.addEventListener("keydown", onKey, true);
        var tries = 0;
        var timer = setInterval(function () {
            tries += 1;
            if (watchVisibility() || tries > 600) {
                clearInterval(timer);
            }
        }, 500);
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
