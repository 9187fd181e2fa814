// "Show code": the exact request Start would send, as cURL, Python and TypeScript, with copy buttons.
import * as DialogPrimitive from "@radix-ui/react-dialog";
import * as Tabs from "@radix-ui/react-tabs";
import { useState } from "react";
import { Button } from "@/components/ui/button";
import { LANGUAGES, type StartRequest } from "@/lib/snippets";

export function ShowCode({ request, disabled }: { request: StartRequest | null; disabled?: boolean }) {
  return (
    <DialogPrimitive.Root>
      <DialogPrimitive.Trigger asChild>
        <Button variant="secondary" disabled={disabled || !request}>
          <svg aria-hidden="true" viewBox="0 0 24 24" className="h-4 w-4" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
            <path d="m8 7-5 5 5 5M16 7l5 5-5 5" />
          </svg>
          Show code
        </Button>
      </DialogPrimitive.Trigger>
      <DialogPrimitive.Portal>
        <DialogPrimitive.Overlay className="fixed inset-0 z-40 bg-black/50" />
        <DialogPrimitive.Content className="fixed left-1/2 top-1/2 z-50 grid max-h-[calc(100vh-2rem)] w-[min(46rem,calc(100vw-1rem))] -translate-x-1/2 -translate-y-1/2 grid-rows-[auto_auto_minmax(0,1fr)] gap-3 rounded-lg bg-white p-4 shadow-xl sm:p-6 dark:bg-slate-900">
          <div className="flex items-start justify-between gap-4">
            <div>
              <DialogPrimitive.Title className="text-lg font-semibold text-slate-900 dark:text-slate-50">Run this from code</DialogPrimitive.Title>
              <DialogPrimitive.Description className="mt-1 text-sm text-slate-700 dark:text-slate-300">
                The request Start sends, with these images, workflow and parameters. Set <code className="font-mono">ATELIER_TOKEN</code> to an
                access token first (the <code className="font-mono">access_token</code> that <code className="font-mono">POST /api/auth/login</code>{" "}
                returns); it is not written here.
              </DialogPrimitive.Description>
            </div>
            <DialogPrimitive.Close asChild>
              <Button variant="ghost" size="sm">
                Close
              </Button>
            </DialogPrimitive.Close>
          </div>
          {request && <Snippets request={request} />}
        </DialogPrimitive.Content>
      </DialogPrimitive.Portal>
    </DialogPrimitive.Root>
  );
}

function Snippets({ request }: { request: StartRequest }) {
  const [language, setLanguage] = useState<string>(LANGUAGES[0].id);
  const [copied, setCopied] = useState<"yes" | "no" | null>(null);
  const current = LANGUAGES.find((l) => l.id === language) ?? LANGUAGES[0];
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(current.make(request));
      setCopied("yes");
    } catch {
      setCopied("no");
    }
    setTimeout(() => setCopied(null), 2500);
  };
  return (
    <Tabs.Root value={language} onValueChange={setLanguage} className="grid min-h-0 grid-rows-[auto_minmax(0,1fr)] gap-2">
      <div className="flex items-end justify-between gap-2 border-b border-slate-200 dark:border-slate-700">
        <Tabs.List aria-label="Language" className="flex gap-1">
          {LANGUAGES.map((l) => (
            <Tabs.Trigger
              key={l.id}
              value={l.id}
              className="-mb-px border-b-2 border-transparent px-3 py-2 text-sm font-medium text-slate-700 focus-visible:outline focus-visible:outline-2 focus-visible:outline-brand-600 data-[state=active]:border-brand-700 data-[state=active]:text-slate-950 dark:text-slate-300 dark:focus-visible:outline-brand-100 dark:data-[state=active]:border-brand-100 dark:data-[state=active]:text-white"
            >
              {l.label}
            </Tabs.Trigger>
          ))}
        </Tabs.List>
        <Button size="sm" variant="secondary" className="mb-1" onClick={() => void copy()}>
          {copied === "yes" ? "Copied" : `Copy ${current.label}`}
        </Button>
        <span role="status" className="sr-only">
          {copied === "yes" ? `${current.label} snippet copied` : copied === "no" ? "Copying is not allowed here: select the text instead" : ""}
        </span>
      </div>
      {LANGUAGES.map((l) => (
        // The panel is the scrolling box, and Radix makes it focusable, so keyboard users can scroll it.
        <Tabs.Content
          key={l.id}
          value={l.id}
          aria-label={`${l.label} snippet`}
          className="max-h-[55vh] overflow-auto rounded-md bg-slate-950 focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-brand-600 dark:border dark:border-slate-700 dark:focus-visible:outline-brand-100"
        >
          <pre data-testid={`snippet-${l.id}`} className="w-max min-w-full p-4 text-xs leading-relaxed text-slate-100">
            <code>{l.make(request)}</code>
          </pre>
        </Tabs.Content>
      ))}
    </Tabs.Root>
  );
}
