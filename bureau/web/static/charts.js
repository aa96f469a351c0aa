// The factory page's monthly trend charts (Apache ECharts, served by the portal itself).
// The data is the page's <script type="application/json" id="trend-data">: one series per
// key indicator, a null value where a month has none (drawn as a gap, never as zero).
(function () {
  "use strict";
  var source = document.getElementById("trend-data");
  if (!source || typeof echarts === "undefined") {
    return;
  }
  var series = JSON.parse(source.textContent);
  series.forEach(function (item) {
    var box = document.getElementById("chart-" + item.indicator);
    if (!box) {
      return;
    }
    var ratio = item.unit === "ratio";
    var values = item.values.map(function (v) {
      return v === null ? null : (ratio ? Math.round(v * 10000) / 100 : v);
    });
    var chart = echarts.init(box, null, { renderer: "svg" });
    chart.setOption({
      animation: false,
      grid: { left: 48, right: 12, top: 12, bottom: 28 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: item.months },
      yAxis: {
        type: "value",
        scale: true,
        // A share never lies outside 0..100 %: keep the axis there.
        min: ratio ? function (v) { return Math.max(0, Math.floor(v.min * 0.9)); } : null,
        max: ratio ? function (v) { return Math.min(100, Math.ceil(v.max * 1.1)); } : null,
        axisLabel: { formatter: ratio ? "{value}%" : "{value}" }
      },
      series: [{ type: "line", data: values, connectNulls: false, symbolSize: 6 }]
    });
    box.setAttribute("data-rendered", "true");
  });
})();
