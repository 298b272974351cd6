/** The dashboard's charts (Chart.js). Each has a caption and its numbers as a table. */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart as ChartJS,
  type ChartData,
  type ChartOptions,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Tooltip,
} from 'chart.js';
import { Chart } from 'react-chartjs-2';
import type { IntervalSeries, Range, Series } from './chartData';
import { num } from './format';

ChartJS.register(BarController, BarElement, CategoryScale, Legend, LineController, LineElement, LinearScale, PointElement, Tooltip);

const COLORS = ['#1d4ed8', '#b45309', '#15803d', '#b91c1c', '#6d28d9'];
type Point = number | Range | null;
type MixedData = ChartData<'bar' | 'line', Point[], string>;

function DataTable({ caption, labels, columns }: { caption: string; labels: string[]; columns: { name: string; values: string[] }[] }) {
  return (
    <details className="chart-table">
      <summary>Show the numbers</summary>
      <table>
        <caption className="sr-only">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">&nbsp;</th>
            {columns.map((c) => (
              <th scope="col" key={c.name}>
                {c.name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {labels.map((l, i) => (
            <tr key={l}>
              <th scope="row">{l}</th>
              {columns.map((c) => (
                <td key={c.name}>{c.values[i]}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}

function Figure({ testId, title, empty, children }: { testId: string; title: string; empty: boolean; children: React.ReactNode }) {
  return (
    <figure className="chart" data-testid={testId}>
      <figcaption>{title}</figcaption>
      {empty ? <p className="muted">No data yet.</p> : children}
    </figure>
  );
}

interface IntervalChartProps {
  testId: string;
  title: string;
  valueLabel: string;
  data: IntervalSeries;
  percent?: boolean;
  yRange?: [number, number];
}

/** An estimate per label (a point) over its interval (a floating bar). */
export function IntervalChart({ testId, title, valueLabel, data, percent = false, yRange }: IntervalChartProps) {
  const fmt = (v: number) => (percent ? `${(v * 100).toFixed(1)}%` : num(v, 0));
  const chartData: MixedData = {
    labels: data.labels,
    datasets: [
      { type: 'bar', label: '95% interval', data: data.ranges, backgroundColor: 'rgba(29, 78, 216, 0.25)', borderColor: COLORS[0], borderWidth: 1, barPercentage: 0.35 },
      { type: 'line', label: valueLabel, data: data.values, showLine: false, pointRadius: 6, pointHoverRadius: 7, backgroundColor: '#111827', borderColor: '#111827' },
    ],
  };
  const options: ChartOptions<'bar' | 'line'> = {
    animation: false,
    maintainAspectRatio: false,
    scales: {
      y: {
        beginAtZero: false,
        min: yRange?.[0],
        max: yRange?.[1],
        ticks: { callback: (v) => (typeof v === 'number' ? fmt(v) : v) },
      },
    },
    plugins: {
      tooltip: {
        callbacks: {
          label: (ctx) => {
            const raw = ctx.raw as Point;
            if (Array.isArray(raw)) return `${ctx.dataset.label}: ${fmt(raw[0])} – ${fmt(raw[1])}`;
            return raw === null ? '' : `${ctx.dataset.label}: ${fmt(raw)}`;
          },
        },
      },
    },
  };
  const summary = data.labels.map((l, i) => {
    const v = data.values[i];
    const r = data.ranges[i];
    return `${l}: ${v === null || v === undefined ? 'no data' : fmt(v)}${r ? ` (${fmt(r[0])} to ${fmt(r[1])})` : ''}`;
  });
  return (
    <Figure testId={testId} title={title} empty={data.labels.length === 0}>
      <div className="chart-box">
        <Chart type="bar" data={chartData} options={options} role="img" aria-label={`${title}. ${summary.join('; ')}`} />
      </div>
      <DataTable
        caption={title}
        labels={data.labels}
        columns={[
          { name: valueLabel, values: data.values.map((v) => (v === null ? '–' : fmt(v))) },
          { name: '95% interval', values: data.ranges.map((r) => (r ? `${fmt(r[0])} – ${fmt(r[1])}` : '–')) },
        ]}
      />
    </Figure>
  );
}

interface SeriesChartProps {
  testId: string;
  title: string;
  data: Series;
  kind: 'bar' | 'line';
  stacked?: boolean;
  percent?: boolean;
}

/** Several series over the same labels: stacked bars or lines. */
export function SeriesChart({ testId, title, data, kind, stacked = false, percent = false }: SeriesChartProps) {
  const fmt = (v: number | null | undefined) => (v === null || v === undefined ? '–' : percent ? `${(v * 100).toFixed(1)}%` : num(v));
  // A dashed series is a variant of the one before it: same colour.
  let colour = -1;
  const chartData: MixedData = {
    labels: data.labels,
    datasets: data.series.map((s) => {
      if (!s.dashed || colour < 0) colour += 1;
      const c = COLORS[colour % COLORS.length];
      return {
        type: kind,
        label: s.label,
        data: s.data,
        backgroundColor: c,
        borderColor: c,
        borderDash: s.dashed ? [6, 4] : undefined,
        spanGaps: true,
        pointRadius: 4,
      };
    }),
  };
  const options: ChartOptions<'bar' | 'line'> = {
    animation: false,
    maintainAspectRatio: false,
    scales: {
      x: { stacked },
      y: {
        stacked,
        beginAtZero: true,
        max: percent ? 1 : undefined,
        ticks: { callback: (v) => (typeof v === 'number' ? fmt(v) : v) },
      },
    },
  };
  const hasData = data.series.some((s) => s.data.some((v) => v !== null));
  return (
    <Figure testId={testId} title={title} empty={data.labels.length === 0 || !hasData}>
      <div className="chart-box">
        <Chart type={kind} data={chartData} options={options} role="img" aria-label={`${title}, ${data.labels.length} points. The numbers are in the table below.`} />
      </div>
      <DataTable caption={title} labels={data.labels} columns={data.series.map((s) => ({ name: s.label, values: s.data.map(fmt) }))} />
    </Figure>
  );
}
