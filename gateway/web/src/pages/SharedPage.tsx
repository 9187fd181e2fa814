// A share link's public page (`/s/:token`): the image, or a before/after slider when the link
// shows both, a download, and when the link stops working. Works signed out; a link that is
// unknown, expired or revoked gets one page saying so.
import { useEffect } from "react";
import { Link, useParams } from "react-router-dom";
import { messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { getShared, type SharedImage } from "@/api/shares";
import { Compare } from "@/components/Compare";
import { Button } from "@/components/ui/button";
import { Alert, PageTitle, Spinner } from "@/components/ui/misc";
import { expiresIn, isGone, refreshDelay, sharedFileName } from "@/lib/shares";
import { useAsync } from "@/lib/useAsync";

function Gone() {
  return (
    <div className="mx-auto grid max-w-xl gap-3 py-10 text-center" data-testid="share-unavailable">
      <PageTitle>This link has expired or was revoked</PageTitle>
      <p className="text-slate-700 dark:text-slate-300">The person who shared it can make a new one.</p>
      <p>
        <Link className="text-brand-700 underline dark:text-brand-100" to="/">
          Go to Atelier
        </Link>
      </p>
    </div>
  );
}

function Download({ image, which, children }: { image: SharedImage; which: "image" | "before"; children: string }) {
  return (
    <Button asChild variant={which === "image" ? "default" : "secondary"}>
      <a href={image.url} download={sharedFileName(image.mime_type, which)} data-testid={which === "image" ? "shared-download" : "shared-download-before"}>
        {children}
      </a>
    </Button>
  );
}

export default function SharedPage() {
  const { token = "" } = useParams();
  const shared = useAsync(() => getShared(token), [token]);

  useEffect(() => {
    document.title = "Shared image · Atelier";
  }, []);

  // The image URLs are short-lived: fetch fresh ones before they run out.
  const delay = refreshDelay(shared.data?.url_expires_at);
  const { reload } = shared;
  useEffect(() => {
    if (delay === null) return;
    const timer = window.setTimeout(reload, delay);
    return () => window.clearTimeout(timer);
  }, [delay, reload]);

  if (shared.error && !shared.data) {
    if (isGone(shared.error)) return <Gone />;
    return (
      <div className="grid gap-3">
        <Alert>{messageOf(shared.error)}</Alert>
        <Button variant="secondary" className="justify-self-start" onClick={shared.reload}>
          Try again
        </Button>
      </div>
    );
  }
  if (!shared.data) return <Spinner />;
  const { image, before, expires_at } = shared.data;
  return (
    <section className="grid gap-3" aria-labelledby="shared-heading" data-testid="shared-view">
      <h1 id="shared-heading" className="text-2xl font-semibold tracking-tight text-slate-900 dark:text-slate-50">
        {before ? "Before and after" : "Shared image"}
      </h1>
      <p className="text-sm text-slate-700 dark:text-slate-300">
        {image.width}×{image.height} px · {formatBytes(image.file_size)} · <span data-testid="shared-expiry">This link expires {expiresIn(expires_at)}</span>
      </p>
      <Compare
        before={before?.url ?? null}
        beforeAlt="Before"
        after={image.url}
        afterAlt={before ? "After" : "Shared image"}
        label={before ? "Before and after" : "Shared image"}
      />
      <div className="flex flex-wrap gap-2">
        <Download image={image} which="image">
          Download
        </Download>
        {before && (
          <Download image={before} which="before">
            Download the original
          </Download>
        )}
      </div>
    </section>
  );
}
