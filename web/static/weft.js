// Weft: theme toggle, keyboard shortcuts, and the trace waterfall's
// collapsing and detail rows. No framework; every page works without it.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = localStorage.getItem("weft-theme");
  if (saved) root.setAttribute("data-theme", saved);

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.addEventListener("click", function () {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (!root.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      localStorage.setItem("weft-theme", next);
    });

    var waterfall = document.querySelector(".waterfall");
    if (waterfall) setUpWaterfall(waterfall);

    document.addEventListener("keydown", function (event) {
      var typing = /INPUT|TEXTAREA|SELECT/.test(event.target.tagName);
      if (event.key === "/" && !typing) {
        var first = document.querySelector("form input, form textarea");
        if (first) { first.focus(); event.preventDefault(); }
      }
      if (typing && event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.form) {
        event.target.form.submit();
      }
      if (!typing && waterfall && (event.key === "e" || event.key === "c")) {
        setAll(waterfall, event.key === "c");
      }
    });
  });

  function children(table, id) {
    return table.querySelectorAll('tr.span-row[data-parent="' + id + '"]');
  }

  // Hides or shows the rows below `row`; a shown row keeps its own collapsed state.
  function setSubtree(table, row, hidden) {
    children(table, row.dataset.id).forEach(function (child) {
      child.classList.toggle("hidden", hidden);
      var detail = document.getElementById("detail-" + child.dataset.id);
      if (hidden && detail) detail.classList.add("hidden");
      if (hidden || child.dataset.collapsed !== "true") setSubtree(table, child, hidden);
    });
  }

  function setCollapsed(table, row, collapsed) {
    row.dataset.collapsed = collapsed ? "true" : "false";
    var toggle = row.querySelector(".toggle");
    if (toggle && toggle.textContent.trim()) toggle.textContent = collapsed ? "▸" : "▾";
    setSubtree(table, row, collapsed);
  }

  function setAll(table, collapsed) {
    table.querySelectorAll("tr.span-row").forEach(function (row) {
      if (row.querySelector(".toggle").textContent.trim()) setCollapsed(table, row, collapsed);
    });
    if (!collapsed) table.querySelectorAll("tr.span-row").forEach(function (row) { row.classList.remove("hidden"); });
  }

  function setUpWaterfall(table) {
    table.querySelectorAll("tr.span-row").forEach(function (row) {
      if (row.dataset.collapsed === "true") setSubtree(table, row, true);
    });
    table.addEventListener("click", function (event) {
      var row = event.target.closest("tr.span-row");
      if (!row || event.target.closest("a")) return;
      if (event.target.classList.contains("toggle")) {
        setCollapsed(table, row, row.dataset.collapsed !== "true");
        return;
      }
      var detail = document.getElementById("detail-" + row.dataset.id);
      if (detail) detail.classList.toggle("hidden");
      row.classList.toggle("selected");
    });
    var expand = document.getElementById("expand-all");
    if (expand) expand.addEventListener("click", function () { setAll(table, false); });
    var collapse = document.getElementById("collapse-all");
    if (collapse) collapse.addEventListener("click", function () { setAll(table, true); });
    if (location.hash.indexOf("#span-") === 0) {
      var target = document.getElementById(location.hash.slice(1));
      if (target) { target.classList.remove("hidden"); target.classList.add("selected"); target.scrollIntoView({ block: "center" }); }
    }
  }
})();
