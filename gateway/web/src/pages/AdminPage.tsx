// The admin console: users and plans, the workflow catalogue, the queue and its dead letters,
// fal's breakers and recent failures, and the audit log. Only administrators reach it (the
// app shows "not found" to anyone else, as the API answers them).
import { useState, type ReactNode } from "react";
import { Link, useSearchParams } from "react-router-dom";
import {
  addWorkflow,
  auditEvents,
  deadLetters,
  discardDeadLetter,
  exportAudit,
  failures,
  falState,
  figure,
  listUsers,
  listWorkflows,
  queueState,
  retryDeadLetter,
  updateUser,
  updateWorkflow,
  workflowStats,
  type AdminWorkflow,
  type AuditFilters,
  type WorkflowChange,
} from "@/api/admin";
import { ApiError, messageOf } from "@/api/problem";
import { SchemaForm } from "@/components/SchemaForm";
import { Button } from "@/components/ui/button";
import { Input, Label, Select } from "@/components/ui/field";
import { Alert, Card, PageTitle, Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { fieldsOf, initialValues, type JsonSchema, type JsonValue, type Values } from "@/lib/schemaForm";
import { useAsync } from "@/lib/useAsync";

const TABS = [
  { id: "users", label: "Users" },
  { id: "workflows", label: "Workflows" },
  { id: "queue", label: "Queue" },
  { id: "fal", label: "fal" },
  { id: "audit", label: "Audit log" },
] as const;
type TabId = (typeof TABS)[number]["id"];

function isTab(value: string | null): value is TabId {
  return TABS.some((tab) => tab.id === value);
}

export default function AdminPage() {
  const [params, setParams] = useSearchParams();
  const wanted = params.get("tab");
  const tab: TabId = isTab(wanted) ? wanted : "users";
  return (
    <div className="grid gap-4">
      <PageTitle>Admin console</PageTitle>
      <nav aria-label="Admin sections" className="flex flex-wrap gap-1 border-b border-slate-200 pb-2 dark:border-slate-700">
        {TABS.map((item) => (
          <Button
            key={item.id}
            variant={item.id === tab ? "default" : "ghost"}
            size="sm"
            aria-current={item.id === tab ? "page" : undefined}
            onClick={() => setParams({ tab: item.id })}
          >
            {item.label}
          </Button>
        ))}
        {/* Analytics has a page of its own. */}
        <Link to="/admin/analytics" className="inline-flex h-8 items-center rounded-md px-3 text-sm text-slate-800 hover:bg-slate-100 dark:text-slate-100 dark:hover:bg-slate-800">
          Analytics
        </Link>
      </nav>
      {tab === "users" && <UsersTab />}
      {tab === "workflows" && <WorkflowsTab />}
      {tab === "queue" && <QueueTab />}
      {tab === "fal" && <FalTab />}
      {tab === "audit" && <AuditTab />}
    </div>
  );
}

function Loading({ state, children }: { state: { loading: boolean; error: unknown; data: unknown }; children: () => ReactNode }) {
  if (state.error) return <Alert>{messageOf(state.error)}</Alert>;
  if (state.data === undefined) return <Spinner />;
  return <>{children()}</>;
}

function Table({ head, children }: { head: string[]; children: ReactNode }) {
  return (
    <div className="overflow-x-auto">
      <table className="w-full text-left text-sm">
        <thead>
          <tr className="border-b border-slate-200 dark:border-slate-700">
            {head.map((cell) => (
              <th key={cell} scope="col" className="px-2 py-1 font-semibold">
                {cell}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

const cell = "px-2 py-1 align-top";

// ---------------------------------------------------------------------------------------------

function UsersTab() {
  const [query, setQuery] = useState("");
  const [search, setSearch] = useState("");
  const [message, setMessage] = useState<string | null>(null);
  const users = useAsync(() => listUsers(search), [search]);
  const change = async (id: string, body: { tier?: string; role?: string }) => {
    setMessage(null);
    try {
      await updateUser(id, body);
      users.reload();
    } catch (error) {
      setMessage(messageOf(error));
    }
  };
  return (
    <Card className="grid gap-3 p-4">
      <form
        className="flex gap-2"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          setSearch(query);
        }}
      >
        <Label htmlFor="user-search" className="sr-only">
          Search by email
        </Label>
        <Input id="user-search" placeholder="Search by email" value={query} onChange={(event) => setQuery(event.target.value)} />
        <Button type="submit" variant="secondary">
          Search
        </Button>
      </form>
      {message && <Alert>{message}</Alert>}
      <Loading state={users}>
        {() => (
          <Table head={["Email", "Role", "Plan", "Created"]}>
            {users.data?.users.map((user) => (
              <tr key={user.id} className="border-b border-slate-100 dark:border-slate-800">
                <td className={cell}>{user.email}</td>
                <td className={cell}>
                  <Select aria-label={`Role of ${user.email}`} value={user.role} onChange={(event) => void change(user.id, { role: event.target.value })}>
                    <option value="user">user</option>
                    <option value="admin">admin</option>
                  </Select>
                </td>
                <td className={cell}>
                  <Select aria-label={`Plan of ${user.email}`} value={user.tier} onChange={(event) => void change(user.id, { tier: event.target.value })}>
                    <option value="free">free</option>
                    <option value="pro">pro</option>
                    <option value="enterprise">enterprise</option>
                  </Select>
                </td>
                <td className={cell}>{user.created_at ? new Date(user.created_at).toLocaleDateString() : "—"}</td>
              </tr>
            ))}
          </Table>
        )}
      </Loading>
    </Card>
  );
}

// ---------------------------------------------------------------------------------------------

const percent = (n: number) => `${Math.round(n * 1000) / 10}%`;
const millis = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`);
const money = (n: number) => `$${n.toFixed(2)}`;

function WorkflowsTab() {
  const workflows = useAsync(listWorkflows, []);
  const stats = useAsync(() => workflowStats().catch(() => null), []);
  const [editing, setEditing] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const apply = async (workflow: AdminWorkflow, change: WorkflowChange) => {
    setMessage(null);
    try {
      await updateWorkflow(workflow, change);
      workflows.reload();
    } catch (error) {
      setMessage(error instanceof ApiError && error.status === 412 ? "Someone changed this workflow meanwhile: reloaded, try again." : messageOf(error));
      workflows.reload();
    }
  };
  return (
    <div className="grid gap-4">
      {message && <Alert>{message}</Alert>}
      <AddWorkflow onAdded={workflows.reload} />
      <Card className="p-4">
        <Loading state={workflows}>
          {() => (
            <Table head={["Workflow", "State", "Version", "Success", "p50 / p95", "Cost", ""]}>
              {workflows.data?.map((workflow) => {
                const row = stats.data?.get(workflow.id);
                return (
                  <tr key={workflow.id} className="border-b border-slate-100 dark:border-slate-800" data-workflow={workflow.id}>
                    <td className={cell}>
                      <div className="font-medium">{workflow.name}</div>
                      <div className="text-xs text-slate-600 dark:text-slate-400">
                        {workflow.id} · {workflow.category} · {workflow.fal_endpoint}
                      </div>
                      {editing === workflow.id && (
                        <EditWorkflow
                          workflow={workflow}
                          onDone={() => {
                            setEditing(null);
                            workflows.reload();
                          }}
                        />
                      )}
                    </td>
                    <td className={cell}>{workflow.active ? "enabled" : "disabled"}</td>
                    <td className={cell}>
                      v{workflow.version}
                      {workflow.pinned && " (pinned)"}
                      {workflow.latest_version > workflow.version && <div className="text-xs">latest v{workflow.latest_version}</div>}
                    </td>
                    <td className={cell}>{figure(row?.success_rate, percent)}</td>
                    <td className={cell}>
                      {figure(row?.p50_ms, millis)} / {figure(row?.p95_ms, millis)}
                    </td>
                    <td className={cell}>{figure(row?.cost, money)}</td>
                    <td className={cn(cell, "flex flex-wrap gap-1")}>
                      <Button size="sm" variant="secondary" onClick={() => void apply(workflow, { active: !workflow.active })}>
                        {workflow.active ? "Disable" : "Enable"}
                      </Button>
                      <Button size="sm" variant="secondary" onClick={() => void apply(workflow, { pinned: !workflow.pinned })}>
                        {workflow.pinned ? "Unpin" : "Pin version"}
                      </Button>
                      <Button size="sm" variant="ghost" onClick={() => setEditing(editing === workflow.id ? null : workflow.id)}>
                        Edit
                      </Button>
                    </td>
                  </tr>
                );
              })}
            </Table>
          )}
        </Loading>
      </Card>
    </div>
  );
}

function EditWorkflow({ workflow, onDone }: { workflow: AdminWorkflow; onDone: () => void }) {
  const schema = workflow.parameters_schema as JsonSchema;
  const fields = fieldsOf(schema);
  const [name, setName] = useState(workflow.name);
  const [description, setDescription] = useState(workflow.description);
  const [category, setCategory] = useState(workflow.category);
  const [values, setValues] = useState<Values>(() => initialValues(fields, workflow.defaults as Values));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [message, setMessage] = useState<string | null>(null);
  const save = async () => {
    const defaults: Record<string, JsonValue> = {};
    for (const [key, value] of Object.entries(values)) if (value !== undefined) defaults[key] = value;
    try {
      await updateWorkflow(workflow, { name, description, category, defaults });
      onDone();
    } catch (error) {
      if (error instanceof ApiError) {
        const found: Record<string, string> = {};
        for (const [field, text] of Object.entries(error.fieldErrors)) found[field.replace(/^defaults\./, "")] = text;
        setErrors(found);
      }
      setMessage(messageOf(error));
    }
  };
  return (
    <form
      className="mt-3 grid gap-3 rounded-md border border-slate-200 p-3 dark:border-slate-700"
      aria-label={`Edit ${workflow.id}`}
      onSubmit={(event) => {
        event.preventDefault();
        void save();
      }}
    >
      {message && <Alert>{message}</Alert>}
      <Label htmlFor={`${workflow.id}-name`}>Name</Label>
      <Input id={`${workflow.id}-name`} value={name} onChange={(event) => setName(event.target.value)} />
      <Label htmlFor={`${workflow.id}-description`}>Description</Label>
      <Input id={`${workflow.id}-description`} value={description} onChange={(event) => setDescription(event.target.value)} />
      <Label htmlFor={`${workflow.id}-category`}>Category</Label>
      <Input id={`${workflow.id}-category`} value={category} onChange={(event) => setCategory(event.target.value)} />
      <h3 className="font-semibold">Defaults</h3>
      <SchemaForm fields={fields} values={values} errors={errors} onChange={(field, value) => setValues((old) => ({ ...old, [field]: value }))} />
      <div className="flex gap-2">
        <Button type="submit">Save</Button>
        <Button type="button" variant="ghost" onClick={onDone}>
          Cancel
        </Button>
      </div>
    </form>
  );
}

function AddWorkflow({ onAdded }: { onAdded: () => void }) {
  const [form, setForm] = useState({ id: "", fal_endpoint: "", name: "", category: "utility" });
  const [message, setMessage] = useState<{ tone: "error" | "success"; text: string } | null>(null);
  const submit = async () => {
    try {
      const added = await addWorkflow({ ...form, active: false });
      setMessage({ tone: "success", text: `Added ${added.id} (disabled until you enable it).` });
      onAdded();
    } catch (error) {
      setMessage({ tone: "error", text: messageOf(error) });
    }
  };
  const field = (key: keyof typeof form, label: string, placeholder: string) => (
    <div className="grid gap-1">
      <Label htmlFor={`add-${key}`}>{label}</Label>
      <Input id={`add-${key}`} placeholder={placeholder} value={form[key]} onChange={(event) => setForm({ ...form, [key]: event.target.value })} />
    </div>
  );
  return (
    <Card className="p-4">
      <h2 className="mb-2 text-lg font-semibold">Add a workflow from a fal endpoint</h2>
      <form
        className="grid gap-2 sm:grid-cols-5 sm:items-end"
        onSubmit={(event) => {
          event.preventDefault();
          void submit();
        }}
      >
        {field("fal_endpoint", "fal endpoint", "fal-ai/esrgan")}
        {field("id", "Id", "esrgan-fast")}
        {field("name", "Name", "ESRGAN (fast)")}
        {field("category", "Category", "upscale")}
        <Button type="submit">Add</Button>
      </form>
      {message && (
        <Alert tone={message.tone} className="mt-2">
          {message.text}
        </Alert>
      )}
    </Card>
  );
}

// ---------------------------------------------------------------------------------------------

function QueueTab() {
  const queue = useAsync(queueState, []);
  const letters = useAsync(deadLetters, []);
  const [message, setMessage] = useState<string | null>(null);
  const act = async (action: () => Promise<void>) => {
    setMessage(null);
    try {
      await action();
    } catch (error) {
      setMessage(messageOf(error));
    }
    queue.reload();
    letters.reload();
  };
  return (
    <div className="grid gap-4">
      <Card className="p-4">
        <h2 className="mb-2 text-lg font-semibold">Depth</h2>
        <Loading state={queue}>
          {() => (
            <dl className="grid grid-cols-3 gap-2 sm:grid-cols-7">
              {(
                [
                  ["High", queue.data?.high],
                  ["Normal", queue.data?.normal],
                  ["Low", queue.data?.low],
                  ["Delayed", queue.data?.delayed],
                  ["In flight", queue.data?.in_flight],
                  ["Limit", queue.data?.in_flight_limit],
                  ["Dead", queue.data?.dead],
                ] as const
              ).map(([label, value]) => (
                <div key={label}>
                  <dt className="text-xs text-slate-600 dark:text-slate-400">{label}</dt>
                  <dd className="text-xl tabular-nums">{figure(value, String)}</dd>
                </div>
              ))}
            </dl>
          )}
        </Loading>
      </Card>
      <Card className="p-4">
        <h2 className="mb-2 text-lg font-semibold">Dead letters</h2>
        {message && <Alert>{message}</Alert>}
        <Loading state={letters}>
          {() =>
            letters.data?.length === 0 ? (
              <p className="text-sm">No dead letters.</p>
            ) : (
              <Table head={["Job", "Workflow", "Attempts", "Last error", ""]}>
                {letters.data?.map((letter) => (
                  <tr key={letter.job_id} className="border-b border-slate-100 dark:border-slate-800">
                    <td className={cell}>
                      <Link className="underline" to={`/jobs/${letter.job_id}`}>
                        {letter.job_id.slice(0, 8)}
                      </Link>
                    </td>
                    <td className={cell}>{letter.workflow_id ?? "—"}</td>
                    <td className={cell}>{letter.attempts}</td>
                    <td className={cell}>
                      <div>{letter.error_code ?? "—"}</div>
                      <div className="text-xs text-slate-600 dark:text-slate-400">{letter.reason}</div>
                    </td>
                    <td className={cn(cell, "flex gap-1")}>
                      <Button size="sm" variant="secondary" onClick={() => void act(() => retryDeadLetter(letter.job_id))}>
                        Retry
                      </Button>
                      <Button
                        size="sm"
                        variant="danger"
                        onClick={() => {
                          const reason = window.prompt("Why is this job given up?", "discarded by an administrator");
                          if (reason) void act(() => discardDeadLetter(letter.job_id, reason));
                        }}
                      >
                        Discard
                      </Button>
                    </td>
                  </tr>
                ))}
              </Table>
            )
          }
        </Loading>
      </Card>
    </div>
  );
}

// ---------------------------------------------------------------------------------------------

function FalTab() {
  const state = useAsync(falState, []);
  const report = useAsync(failures, []);
  return (
    <div className="grid gap-4">
      <Card className="p-4">
        <h2 className="mb-2 text-lg font-semibold">Circuit breakers</h2>
        <Loading state={state}>
          {() => (
            <>
              <p className="mb-2 text-sm">Jobs failed in the last hour: {state.data?.recent_failures}</p>
              {state.data?.breakers.length === 0 ? (
                <p className="text-sm">No fal host called yet.</p>
              ) : (
                <Table head={["Host", "State"]}>
                  {state.data?.breakers.map((breaker) => (
                    <tr key={breaker.host}>
                      <td className={cell}>{breaker.host}</td>
                      <td className={cell}>{breaker.state.replace("_", "-")}</td>
                    </tr>
                  ))}
                </Table>
              )}
            </>
          )}
        </Loading>
      </Card>
      <Card className="p-4">
        <h2 className="mb-2 text-lg font-semibold">Failures by error type (last 24 hours)</h2>
        <Loading state={report}>
          {() =>
            report.data?.groups.length === 0 ? (
              <p className="text-sm">No failures.</p>
            ) : (
              <Table head={["Error type", "Jobs", "Recent examples"]}>
                {report.data?.groups.map((group) => (
                  <tr key={group.error_type} className="border-b border-slate-100 dark:border-slate-800">
                    <td className={cell}>{group.error_type}</td>
                    <td className={cell}>{group.count}</td>
                    <td className={cell}>
                      <ul>
                        {group.examples.map((example) => (
                          <li key={example.job_id}>
                            <Link className="underline" to={`/jobs/${example.job_id}`}>
                              {example.workflow_id}
                            </Link>{" "}
                            {example.message}
                          </li>
                        ))}
                      </ul>
                    </td>
                  </tr>
                ))}
              </Table>
            )
          }
        </Loading>
      </Card>
    </div>
  );
}

// ---------------------------------------------------------------------------------------------

function AuditTab() {
  const [draft, setDraft] = useState<AuditFilters>({});
  const [filters, setFilters] = useState<AuditFilters>({});
  const [message, setMessage] = useState<string | null>(null);
  const events = useAsync(() => auditEvents(filters), [filters]);
  const download = async () => {
    try {
      const blob = await exportAudit(filters);
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = "audit.jsonl";
      link.click();
      URL.revokeObjectURL(url);
    } catch (error) {
      setMessage(messageOf(error));
    }
  };
  return (
    <Card className="grid gap-3 p-4">
      <form
        className="grid gap-2 sm:grid-cols-4 sm:items-end"
        onSubmit={(event) => {
          event.preventDefault();
          setFilters(draft);
        }}
      >
        {(
          [
            ["action", "Action starts with", "workflow."],
            ["actor_user_id", "Actor (user id)", ""],
            ["subject_user_id", "About (user id)", ""],
          ] as const
        ).map(([key, label, placeholder]) => (
          <div key={key} className="grid gap-1">
            <Label htmlFor={`audit-${key}`}>{label}</Label>
            <Input id={`audit-${key}`} placeholder={placeholder} value={draft[key] ?? ""} onChange={(event) => setDraft({ ...draft, [key]: event.target.value })} />
          </div>
        ))}
        <div className="flex gap-2">
          <Button type="submit" variant="secondary">
            Filter
          </Button>
          <Button type="button" variant="ghost" onClick={() => void download()}>
            Export
          </Button>
        </div>
      </form>
      {message && <Alert>{message}</Alert>}
      <Loading state={events}>
        {() => (
          <Table head={["When", "Action", "Actor", "Target", "Outcome"]}>
            {events.data?.events.map((event) => (
              <tr key={event.id} className="border-b border-slate-100 dark:border-slate-800">
                <td className={cell}>{event.at ? new Date(event.at).toLocaleString() : "—"}</td>
                <td className={cell}>{event.action}</td>
                <td className={cell}>{event.actor_user_id ?? event.actor_service}</td>
                <td className={cell}>{event.target ? `${event.target.kind} ${event.target.id ?? ""}` : "—"}</td>
                <td className={cell}>{event.outcome}</td>
              </tr>
            ))}
          </Table>
        )}
      </Loading>
    </Card>
  );
}
