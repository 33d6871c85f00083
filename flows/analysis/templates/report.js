// Scope tabs: show one scope at a time; without script every scope is shown.
// The map's "Actual size" button. Inlined into report.html by report.html.j2.
(function () {
  var sections = document.querySelectorAll("section.scope");
  var links = document.querySelectorAll("a[data-scope]");
  function show(slug, scroll) {
    var found = false;
    sections.forEach(function (s) {
      var on = s.getAttribute("data-scope") === slug;
      s.classList.toggle("active", on);
      found = found || on;
    });
    if (!found && sections.length) { return show(sections[0].getAttribute("data-scope"), false); }
    document.querySelectorAll("nav.scopes a").forEach(function (a) {
      a.setAttribute("aria-current", a.getAttribute("data-scope") === slug ? "true" : "false");
    });
    if (scroll) { document.getElementById("scope-" + slug).scrollIntoView(); }
  }
  links.forEach(function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      var slug = a.getAttribute("data-scope");
      history.replaceState(null, "", "#scope-" + slug);
      show(slug, a.closest("nav") === null);
    });
  });
  document.querySelectorAll("figure.map").forEach(function (fig) {
    var svg = fig.querySelector("svg.map-svg");
    var button = fig.querySelector("button.zoom");
    if (!svg || !button) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var actual = fig.classList.toggle("actual");
      svg.style.width = actual ? svg.getAttribute("data-width") + "pt" : "";
      button.textContent = actual ? "Fit to width" : "Actual size";
    });
  });
  document.body.classList.add("tabs");
  var hash = (location.hash || "").replace(/^#scope-/, "");
  show(hash || (sections.length ? sections[0].getAttribute("data-scope") : ""), false);
  document.body.setAttribute("data-ready", "1");
})();
