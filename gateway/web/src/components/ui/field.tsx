import * as LabelPrimitive from "@radix-ui/react-label";
import type { ComponentProps, InputHTMLAttributes, SelectHTMLAttributes, TextareaHTMLAttributes } from "react";
import { cn } from "@/lib/cn";

const control =
  "w-full rounded-md border border-slate-400 bg-white px-3 py-2 text-sm text-slate-900 placeholder:text-slate-500 focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-1 focus-visible:outline-brand-600 aria-[invalid=true]:border-red-700 dark:border-slate-500 dark:bg-slate-900 dark:text-slate-100 dark:placeholder:text-slate-400 dark:focus-visible:outline-brand-100";

export function Input({ className, ...props }: InputHTMLAttributes<HTMLInputElement>) {
  return <input className={cn(control, "h-10", className)} {...props} />;
}

export function Textarea({ className, ...props }: TextareaHTMLAttributes<HTMLTextAreaElement>) {
  return <textarea className={cn(control, "min-h-20", className)} {...props} />;
}

export function Select({ className, ...props }: SelectHTMLAttributes<HTMLSelectElement>) {
  return <select className={cn(control, "h-10", className)} {...props} />;
}

export function Label({ className, ...props }: ComponentProps<typeof LabelPrimitive.Root>) {
  return <LabelPrimitive.Root className={cn("text-sm font-medium text-slate-900 dark:text-slate-100", className)} {...props} />;
}

export function FieldError({ id, children }: { id: string; children?: string | null | undefined }) {
  if (!children) return null;
  return (
    <p id={id} className="text-sm text-red-700 dark:text-red-300">
      {children}
    </p>
  );
}

export function Hint({ id, children }: { id: string; children?: string | null | undefined }) {
  if (!children) return null;
  return (
    <p id={id} className="text-xs text-slate-600 dark:text-slate-300">
      {children}
    </p>
  );
}
