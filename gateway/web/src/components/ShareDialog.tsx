// "Share": a public link to one image (optionally beside its original), with an expiry. The
// link is shown once, when it is made: only its hash is kept by the server.
import * as DialogPrimitive from "@radix-ui/react-dialog";
import { useId, useState } from "react";
import { messageOf } from "@/api/problem";
import { createShare, type CreatedShare } from "@/api/shares";
import { Button } from "@/components/ui/button";
import { Hint, Input, Label, Select } from "@/components/ui/field";
import { Alert, Switch } from "@/components/ui/misc";
import { DEFAULT_EXPIRY, EXPIRY_CHOICES, expiresIn } from "@/lib/shares";

export function ShareDialog({ imageId, canCompare, label = "Share" }: { imageId: string; canCompare: boolean; label?: string }) {
  const ids = useId();
  const [open, setOpen] = useState(false);
  const [seconds, setSeconds] = useState(DEFAULT_EXPIRY);
  const [beforeAfter, setBeforeAfter] = useState(canCompare);
  const [created, setCreated] = useState<CreatedShare | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);

  const reset = (next: boolean) => {
    setOpen(next);
    // The original may have loaded since the button was shown: before/after is on by default
    // whenever there is one.
    if (next) setBeforeAfter(canCompare);
    if (!next) {
      setCreated(null);
      setError(null);
      setCopied(false);
    }
  };

  const create = async () => {
    setBusy(true);
    setError(null);
    try {
      setCreated(await createShare(imageId, { expiresInSeconds: seconds, beforeAfter: canCompare && beforeAfter }));
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  const copy = async (url: string) => {
    try {
      await navigator.clipboard.writeText(url);
      setCopied(true);
    } catch {
      setError("Copying was not allowed; select the link and copy it yourself.");
    }
  };

  return (
    <DialogPrimitive.Root open={open} onOpenChange={reset}>
      <DialogPrimitive.Trigger asChild>
        <Button variant="secondary" data-testid="share-open">
          {label}
        </Button>
      </DialogPrimitive.Trigger>
      <DialogPrimitive.Portal>
        <DialogPrimitive.Overlay className="fixed inset-0 z-40 bg-black/50" />
        <DialogPrimitive.Content className="fixed left-1/2 top-1/2 z-50 grid w-[min(32rem,calc(100vw-2rem))] -translate-x-1/2 -translate-y-1/2 gap-4 rounded-lg bg-white p-6 shadow-xl dark:bg-slate-900">
          <DialogPrimitive.Title className="text-lg font-semibold text-slate-900 dark:text-slate-50">Share a link</DialogPrimitive.Title>
          <DialogPrimitive.Description className="text-sm text-slate-700 dark:text-slate-300">
            Anyone with the link can see and download this image, without an account, until it expires or you revoke it. Nothing else of yours is shown.
          </DialogPrimitive.Description>
          {error && <Alert>{error}</Alert>}
          {created ? (
            <div className="grid gap-2">
              <Label htmlFor={`${ids}-url`}>Link</Label>
              <div className="flex gap-2">
                <Input id={`${ids}-url`} readOnly value={created.url} onFocus={(event) => event.currentTarget.select()} data-testid="share-url" aria-describedby={`${ids}-once`} />
                <Button onClick={() => void copy(created.url)} data-testid="share-copy">
                  {copied ? "Copied" : "Copy"}
                </Button>
              </div>
              <Hint id={`${ids}-once`}>
                {`Expires ${expiresIn(created.link.expires_at)}. Copy it now: it cannot be shown again. Revoke it under Settings → Shared links.`}
              </Hint>
            </div>
          ) : (
            <div className="grid gap-3">
              <div className="grid gap-1">
                <Label htmlFor={`${ids}-expiry`}>Expires after</Label>
                <Select id={`${ids}-expiry`} value={seconds} onChange={(event) => setSeconds(Number(event.target.value))} data-testid="share-expiry">
                  {EXPIRY_CHOICES.map((choice) => (
                    <option key={choice.seconds} value={choice.seconds}>
                      {choice.label}
                    </option>
                  ))}
                </Select>
              </div>
              {canCompare && (
                <div className="flex items-center gap-3">
                  <Switch id={`${ids}-compare`} checked={beforeAfter} onCheckedChange={setBeforeAfter} data-testid="share-before-after" />
                  <Label htmlFor={`${ids}-compare`}>Show the original beside it (before/after slider)</Label>
                </div>
              )}
            </div>
          )}
          <div className="flex justify-end gap-2">
            <DialogPrimitive.Close asChild>
              <Button variant="secondary">{created ? "Done" : "Cancel"}</Button>
            </DialogPrimitive.Close>
            {!created && (
              <Button onClick={() => void create()} disabled={busy} data-testid="share-create">
                {busy ? "Creating…" : "Create link"}
              </Button>
            )}
          </div>
        </DialogPrimitive.Content>
      </DialogPrimitive.Portal>
    </DialogPrimitive.Root>
  );
}
