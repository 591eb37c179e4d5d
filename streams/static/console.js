// shillguard console: the only script, served from the package (no CDN). A "select all" box checks or
// unchecks every checkbox of its name in the same form.
document.addEventListener("change", function (event) {
  var box = event.target;
  var name = box.getAttribute && box.getAttribute("data-select-all");
  if (!name || !box.form) return;
  box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
    other.checked = box.checked;
  });
});
