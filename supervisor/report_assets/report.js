(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.basket"));
  var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.flag"));
  var search = document.getElementById("q"), shown = document.getElementById("shown");
  function apply() {
    var on = {}, text = search.value.trim().toLowerCase(), count = 0;
    boxes.forEach(function (box) { if (box.checked) { on[box.value] = true; } });
    rows.forEach(function (row, i) {
      var flagged = row.getAttribute("data-flags").split(" ").some(function (f) { return on[f]; });
      var show = flagged && (!text || texts[i].indexOf(text) >= 0);
      row.hidden = !show;
      if (show) { count += 1; }
    });
    shown.textContent = String(count);
    document.body.setAttribute("data-shown", String(count));
  }
  function setAll(value) { boxes.forEach(function (box) { box.checked = value; }); apply(); }
  boxes.forEach(function (box) { box.addEventListener("change", apply); });
  search.addEventListener("input", apply);
  document.getElementById("all").addEventListener("click", function () { setAll(true); });
  document.getElementById("none").addEventListener("click", function () { setAll(false); });
  document.body.setAttribute("data-rows", String(rows.length));
  apply();
})();
