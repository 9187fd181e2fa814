// Your share links: what each shows, until when, how often it was opened; revoke any at once.
import { useState } from "react";
import { messageOf } from "@/api/problem";
import { listShares, revokeShare, type ShareLink } from "@/api/shares";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { Alert, Card, Spinner } from "@/components/ui/misc";
import { expiresIn, stateAt } from "@/lib/shares";
import { useAsync } from "@/lib/useAsync";

const STATE_LABELS = { active: "Active", expired: "Expired", revoked: "Revoked" } as const;

function LinkRow({ link, onRevoke }: { link: ShareLink; onRevoke: (link: ShareLink) => Promise<void> }) {
  const state = stateAt(link);
  const views = `${link.view_count} view${link.view_count === 1 ? "" : "s"}`;
  return (
    <li className="flex flex-wrap items-center gap-x-4 gap-y-1 py-2 text-sm" data-testid="share-link" data-state={state}>
      <span className="font-mono text-xs text-slate-700 dark:text-slate-300" title={`Image ${link.image_id}`}>
        {link.image_id.slice(0, 8)}
      </span>
      <span>{link.before_image_id ? "Before/after" : "Image"}</span>
      <span className="font-medium" data-testid="share-state">
        {STATE_LABELS[state]}
      </span>
      <span className="text-slate-700 dark:text-slate-300">{state === "active" ? `Expires ${expiresIn(link.expires_at)}` : ""}</span>
      <span className="tabular-nums text-slate-700 dark:text-slate-300">{views}</span>
      {state === "active" && (
        <span className="ml-auto">
          <ConfirmDialog
            trigger={
              <Button size="sm" variant="secondary" data-testid="share-revoke">
                Revoke
              </Button>
            }
            title="Revoke this link?"
            description="It stops working at once for everyone who has it. This cannot be undone; you can make a new link."
            confirmLabel="Revoke"
            danger
            onConfirm={() => onRevoke(link)}
          />
        </span>
      )}
    </li>
  );
}

export function ShareLinks() {
  const links = useAsync(() => listShares(), []);
  const [error, setError] = useState<string | null>(null);

  const revoke = async (link: ShareLink) => {
    setError(null);
    try {
      await revokeShare(link.id);
      links.reload();
    } catch (err) {
      setError(messageOf(err));
    }
  };

  return (
    <Card className="grid gap-3" data-testid="share-links">
      <h2 className="text-lg font-semibold">Shared links</h2>
      <p className="text-sm text-slate-700 dark:text-slate-300">Public links to your images. A link is shown only when you make it; revoke one here to stop it at once.</p>
      {error && <Alert>{error}</Alert>}
      {links.error ? <Alert>{messageOf(links.error)}</Alert> : null}
      {links.loading && !links.data ? (
        <Spinner />
      ) : links.data && links.data.links.length > 0 ? (
        <ul className="divide-y divide-slate-200 dark:divide-slate-700">
          {links.data.links.map((link) => (
            <LinkRow key={link.id} link={link} onRevoke={revoke} />
          ))}
        </ul>
      ) : (
        !links.error && <p className="text-sm text-slate-700 dark:text-slate-300">You have not shared anything yet. Use “Share” on a result.</p>
      )}
    </Card>
  );
}
