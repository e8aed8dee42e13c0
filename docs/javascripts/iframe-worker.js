/* Web workers for a site read from disk.
 *
 * Browsers refuse `new Worker(url)` on pages opened from file://, and the search of this site runs in a worker.
 * When the page comes from file://, `Worker` is replaced by a stand-in that loads the worker's script into a hidden
 * same-origin iframe and passes messages both ways, so search works with no server.  Served pages keep the real
 * Worker.  (The worker's `importScripts` is not available here: the English search index needs none.)
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this.pending = [];
      this.loaded = false;
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      this.frame.setAttribute("aria-hidden", "true");
      document.body.appendChild(this.frame);
      const scope = this.frame.contentWindow;
      const owner = this;
      scope.postMessage = function (data) {            // the worker's replies reach the page
        const event = new MessageEvent("message", { data: data });
        if (typeof owner.onmessage === "function") {
          owner.onmessage(event);
        }
        owner.dispatchEvent(event);
      };
      scope.importScripts = function () {
        throw new Error("importScripts is not available to a worker of a page read from disk");
      };
      const script = scope.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = function () {
        owner.loaded = true;
        owner.pending.splice(0).forEach(function (data) { owner.deliver(data); });
      };
      script.onerror = function () {
        const event = new ErrorEvent("error", { message: "could not load the worker script " + script.src });
        if (typeof owner.onerror === "function") {
          owner.onerror(event);
        }
        owner.dispatchEvent(event);
      };
      scope.document.head.appendChild(script);
    }

    deliver(data) {                                     // a message from the page reaches the worker's listeners
      const scope = this.frame.contentWindow;
      const event = new scope.MessageEvent("message", { data: data });
      if (typeof scope.onmessage === "function") {
        scope.onmessage(event);
      } else {
        scope.dispatchEvent(event);
      }
    }

    postMessage(data) {
      if (this.loaded) {
        this.deliver(data);
      } else {
        this.pending.push(data);
      }
    }

    terminate() {
      this.frame.remove();
    }
  }

  window.Worker = FrameWorker;
})();
