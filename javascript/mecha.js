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

    // Re-render the tab (status line, lists) each time it is shown again: the WebUI may have
    // loaded another checkpoint while another tab was open. "Shown" means displayed (the tab is
    // selected), not scrolled into view, so opening a long dropdown never triggers it.
    var wasShown = null;

    function isShown(element) {
        return element.getClientRects().length > 0;
    }

    function watchTab() {
        var status = byId("mecha_status");
        var refresh = byId("mecha_status_refresh");
        if (!status || !refresh) {
            return;
        }
        var shown = isShown(status);
        if (shown && wasShown === false) {
            refresh.click();
        }
        wasShown = shown;
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

    // A method's help links to its section of the guide (docs/methods.md, in a closed accordion
    // under the recipe): open the accordion and scroll to the section named in the link's title.
    function onGuideLink(event) {
        var link = event.target && event.target.closest ? event.target.closest('a[href="#mecha_guide"]') : null;
        var guide = byId("mecha_guide");
        if (!link || !guide) {
            return;
        }
        event.preventDefault();
        var toggle = guide.querySelector(".label-wrap");
        if (toggle && !toggle.classList.contains("open")) {
            toggle.click();
        }
        var title = link.getAttribute("title");
        setTimeout(function () {
            var target = guide;
            Array.prototype.forEach.call(guide.querySelectorAll("h2"), function (heading) {
                if (title && heading.textContent.trim() === title) {
                    target = heading;
                }
            });
            target.scrollIntoView({block: "start"});
        }, 100);
    }

    function start() {
        if (window.mechaTabStarted) {
            return;
        }
        window.mechaTabStarted = true;
        document.addEventListener("keydown", onKey, true);
        document.addEventListener("click", onGuideLink, true);
        setInterval(watchTab, 1000);
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
