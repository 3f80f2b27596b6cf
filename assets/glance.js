<script>
// Glance's page script (app.py). The keys of the large view: ← and → step through the results, Esc closes it.
// Then clicks and box selections on the map of the collection (map_tab). The listeners sit on the document,
// so they work on whatever gradio draws.
(() => {
  document.addEventListener("keydown", (event) => {
    const detail = document.querySelector("#detail");
    if (!detail || detail.offsetParent === null || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    const button = { ArrowLeft: "#prev-photo", ArrowRight: "#next-photo", Escape: "#close-detail" }[event.key];
    if (!button) return;
    event.preventDefault();
    document.querySelector(button)?.click();
  });
})();
// The map: a click on a point opens that photo; a box
// drawn with the mouse asks for more like the photos inside it. Either way the chosen ids go into the hidden
// #map-selection box and the hidden #map-go button sends them to the server.
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  let drag = null;
  const mapOf = (event) => event.target.closest && event.target.closest("#map svg");
  const inMap = (svg, event) => {
    const at = svg.createSVGPoint();
    at.x = event.clientX;
    at.y = event.clientY;
    return at.matrixTransform(svg.getScreenCTM().inverse());
  };
  const ask = (fieldId, buttonId, text) => {
    const field = document.querySelector(`${fieldId} textarea, ${fieldId} input`);
    field.value = text;
    field.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => document.querySelector(buttonId).click(), 100);
  };
  const send = (ids) => ask("#map-selection", "#map-go", ids.join(","));
  let hovering = null;
  document.addEventListener("mouseover", (event) => {  // the thumbnail beside the map, once the pointer rests
    const point = !drag && event.target.closest && event.target.closest("#map circle[data-id]");
    if (!point || point.dataset.id === hovering) return;
    hovering = point.dataset.id;
    setTimeout(() => { if (hovering === point.dataset.id) ask("#map-hover", "#map-peek", hovering); }, 150);
  });
  document.addEventListener("mousedown", (event) => {
    const svg = mapOf(event);
    if (!svg) return;
    event.preventDefault();
    const box = document.createElementNS(SVG, "rect");
    box.setAttribute("class", "map-box");
    svg.appendChild(box);
    drag = { svg, box, from: inMap(svg, event), x: event.clientX, y: event.clientY };
  });
  document.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const to = inMap(drag.svg, event);
    drag.box.setAttribute("x", Math.min(drag.from.x, to.x));
    drag.box.setAttribute("y", Math.min(drag.from.y, to.y));
    drag.box.setAttribute("width", Math.abs(to.x - drag.from.x));
    drag.box.setAttribute("height", Math.abs(to.y - drag.from.y));
  });
  document.addEventListener("mouseup", (event) => {
    if (!drag) return;
    const { svg, box, from, x, y } = drag;
    drag = null;
    box.remove();
    if (Math.abs(event.clientX - x) + Math.abs(event.clientY - y) < 5) {
      const point = event.target.closest && event.target.closest("circle[data-id]");
      if (point) send([point.dataset.id]);
      return;
    }
    const to = inMap(svg, event);
    const [x0, x1] = [Math.min(from.x, to.x), Math.max(from.x, to.x)];
    const [y0, y1] = [Math.min(from.y, to.y), Math.max(from.y, to.y)];
    const ids = [...svg.querySelectorAll("circle[data-id]")].filter((c) => {
      const cx = +c.getAttribute("cx"), cy = +c.getAttribute("cy");
      return cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1;
    }).map((c) => c.dataset.id);
    if (ids.length) send(ids);
  });
})();
</script>
